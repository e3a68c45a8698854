// psyserve C++ client internals: protobuf <-> public types, gRPC status -> psyserve::Error.
// Used by client.cpp and the unit tests; never installed, never included by users.
#pragma once

#include <string>

#include "psyserve/client.h"
#include "psyserve/v1/messages.pb.h"

namespace psyserve::internal {

namespace pb = ::psyserve::v1;

// Values and stimuli. to_pb throws Error(kInvalidArgument, field) for a none value.
void to_pb(const Value& value, pb::ParameterValue* out, const std::string& field);
Value from_pb(const pb::ParameterValue& value);
void to_pb(const Stimulus& stimulus, google::protobuf::Map<std::string, pb::ParameterValue>* out, const std::string& field);
Stimulus from_pb(const google::protobuf::Map<std::string, pb::ParameterValue>& values);

// Replies.
Parameter from_pb(const pb::Parameter& p);
Trial from_pb(const pb::Trial& t);
StrategySummary from_pb(const pb::StrategySummary& s);
ConfigureResult from_pb(const pb::ConfigureResponse& r);
AskResult from_pb(const pb::AskResponse& r);
TellResult from_pb(const pb::TellResponse& r);
QueryResult from_pb(const pb::QueryResponse& r);
InfoResult from_pb(const pb::InfoResponse& r);

// Requests (strategy_id already resolved by the caller).
pb::AskRequest to_pb(const AskRequest& r, std::int64_t strategy_id);
pb::TellRequest to_pb(const TellRequest& r, std::int64_t strategy_id);
pb::QueryRequest to_pb(const QueryRequest& r, std::int64_t strategy_id);
pb::TrialState to_pb(TrialState state);

// The first BadRequest field violation's field in a serialized google.rpc.Status (the
// grpc-status-details-bin trailer), read from the wire format; "" if absent or malformed.
std::string bad_request_field(const std::string& status_details);

// A failed call's status -> the exception thrown to the caller.
Error error_from_status(int code, const std::string& message, const std::string& status_details);

}  // namespace psyserve::internal
