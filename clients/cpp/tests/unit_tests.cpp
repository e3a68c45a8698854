// Unit tests: psyserve::Value, protobuf conversions, and decoding a failed call's status into
// psyserve::Error (code, message, BadRequest field) from the grpc-status-details-bin wire format.
#include <gtest/gtest.h>

#include <string>

#include "internal.h"
#include "psyserve/client.h"

using psyserve::Error;
using psyserve::StatusCode;
using psyserve::Value;
namespace internal = psyserve::internal;
namespace pb = psyserve::v1;

namespace {

// A minimal protobuf wire-format writer (length-delimited and varint fields), written from the
// encoding spec independently of the decoder under test.
std::string varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
  return out;
}
std::string bytes_field(int number, const std::string& bytes) {
  return varint((static_cast<std::uint64_t>(number) << 3) | 2) + varint(bytes.size()) + bytes;
}
std::string varint_field(int number, std::uint64_t value) {
  return varint(static_cast<std::uint64_t>(number) << 3) + varint(value);
}
std::string any(const std::string& type, const std::string& value) {
  return bytes_field(1, "type.googleapis.com/" + type) + bytes_field(2, value);
}
std::string violation(const std::string& field, const std::string& description) {
  return bytes_field(1, bytes_field(1, field) + bytes_field(2, description));
}
std::string from_hex(const std::string& hex) {
  std::string out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

// google.rpc.Status(code=NOT_FOUND, details=[DebugInfo, BadRequest(strategy_id, second)]) as serialized
// by Python's protobuf + grpcio-status (the server's encoder).
const char* kPythonStatusHex = "0805121873747261746567795f6964203939206e6f7420666f756e641a3a0a28747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e4465627567496e666f120e120c616e6f7468657220747970651a540a29747970652e676f6f676c65617069732e636f6d2f676f6f676c652e7270632e4261645265717565737412270a180a0b73747261746567795f696412096e6f7420666f756e640a0b0a067365636f6e64120178";

}  // namespace

// ------------------------------------------------------------------ Value

TEST(Value, KindsFollowTheConstructorArgument) {
  EXPECT_TRUE(Value().is_none());
  EXPECT_TRUE(Value(0.25).is_number());
  EXPECT_TRUE(Value(3).is_integer());  // int is an integer, not a number
  EXPECT_TRUE(Value(3LL).is_integer());
  EXPECT_TRUE(Value(std::int64_t{1} << 40).is_integer());
  EXPECT_TRUE(Value(true).is_flag());
  EXPECT_TRUE(Value("gabor").is_category());  // a string literal is a category, not a flag
  EXPECT_TRUE(Value(std::string("gabor")).is_category());
  EXPECT_EQ(Value::number(2).kind(), Value::Kind::kNumber);
  EXPECT_EQ(Value::integer(2).kind(), Value::Kind::kInteger);
}

TEST(Value, StrictAccessorsReturnTheValue) {
  EXPECT_DOUBLE_EQ(Value(0.25).as_number(), 0.25);
  EXPECT_EQ(Value(7).as_integer(), 7);
  EXPECT_EQ(Value(std::int64_t{1} << 40).as_integer(), std::int64_t{1} << 40);
  EXPECT_EQ(Value("square").as_category(), "square");
  EXPECT_FALSE(Value(false).as_flag());
}

TEST(Value, WrongKindThrowsInvalidArgument) {
  try {
    (void)Value("gabor").as_number();
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.message(), "value is a category, not a number");
  }
  EXPECT_THROW((void)Value(1).as_number(), Error);
  EXPECT_THROW((void)Value(1.0).as_integer(), Error);
  EXPECT_THROW((void)Value(true).as_category(), Error);
  EXPECT_THROW((void)Value(1).as_flag(), Error);
  EXPECT_THROW((void)Value().to_double(), Error);
  EXPECT_THROW((void)Value("a").to_double(), Error);
}

TEST(Value, LenientConversionAndText) {
  EXPECT_DOUBLE_EQ(Value(3).to_double(), 3.0);
  EXPECT_DOUBLE_EQ(Value(true).to_double(), 1.0);
  EXPECT_DOUBLE_EQ(Value(-0.5).to_double(), -0.5);
  EXPECT_EQ(Value(0.1).to_string(), "0.1");
  EXPECT_EQ(Value(-12).to_string(), "-12");
  EXPECT_EQ(Value("gabor").to_string(), "gabor");
  EXPECT_EQ(Value(true).to_string(), "true");
  EXPECT_EQ(Value().to_string(), "none");
}

TEST(Value, EqualityComparesKindAndValue) {
  EXPECT_EQ(Value(1.0), Value(1.0));
  EXPECT_NE(Value(1.0), Value(1));  // number 1 and integer 1 are different wire values
  EXPECT_NE(Value(true), Value(1));
  EXPECT_EQ(Value("a"), Value(std::string("a")));
}

// ------------------------------------------------------------------ conversions

TEST(Convert, EveryKindRoundTripsThroughParameterValue) {
  for (const Value& v : {Value(0.125), Value(-3), Value("circle"), Value(true), Value(false), Value(std::int64_t{1} << 53)}) {
    pb::ParameterValue wire;
    internal::to_pb(v, &wire, "x");
    // and through bytes, as it travels
    pb::ParameterValue parsed;
    ASSERT_TRUE(parsed.ParseFromString(wire.SerializeAsString()));
    EXPECT_EQ(internal::from_pb(parsed), v) << v.to_string();
  }
  pb::ParameterValue wire;
  internal::to_pb(Value(2), &wire, "x");
  EXPECT_EQ(wire.kind_case(), pb::ParameterValue::kInteger);
  internal::to_pb(Value(2.0), &wire, "x");
  EXPECT_EQ(wire.kind_case(), pb::ParameterValue::kNumber);
  EXPECT_TRUE(internal::from_pb(pb::ParameterValue()).is_none());
}

TEST(Convert, NoneValueIsRejectedNamingTheField) {
  psyserve::AskRequest ask;
  ask.fixed["contrast"] = Value();
  try {
    internal::to_pb(ask, 1);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(e.field(), "fixed_parameters.contrast");
  }
}

TEST(Convert, AskRequest) {
  psyserve::AskRequest ask;
  ask.num_points = 3;
  ask.fixed = {{"shape", "gabor"}, {"eye", true}, {"frequency", 4}};
  ask.ttl_seconds = 30;
  auto wire = internal::to_pb(ask, 42);
  EXPECT_EQ(wire.strategy_id(), 42);
  EXPECT_EQ(wire.num_points(), 3);
  EXPECT_EQ(wire.fixed_parameters().at("shape").category(), "gabor");
  EXPECT_TRUE(wire.fixed_parameters().at("eye").flag());
  EXPECT_EQ(wire.fixed_parameters().at("frequency").integer(), 4);
  EXPECT_DOUBLE_EQ(wire.ttl_seconds(), 30);
  ask.num_points = 0;
  EXPECT_THROW(internal::to_pb(ask, 42), Error);
}

TEST(Convert, TellByTrialIdOrStimulus) {
  psyserve::TellRequest tell;
  tell.trial_id = 9;
  tell.outcomes = {{"detected", 1.0, std::nullopt}, {"confidence", 0.7, 0.05}};
  tell.metadata = {{"rt", "0.42"}};
  auto wire = internal::to_pb(tell, 2);
  EXPECT_EQ(wire.target_case(), pb::TellRequest::kTrialId);
  EXPECT_EQ(wire.trial_id(), 9);
  ASSERT_EQ(wire.outcomes_size(), 2);
  EXPECT_FALSE(wire.outcomes(0).has_sem());
  EXPECT_DOUBLE_EQ(wire.outcomes(1).sem(), 0.05);
  EXPECT_EQ(wire.metadata().at("rt"), "0.42");
  EXPECT_FALSE(wire.has_model_data());  // unset: the server's default applies
  tell.model_data = false;
  EXPECT_FALSE(internal::to_pb(tell, 2).model_data());
  EXPECT_TRUE(internal::to_pb(tell, 2).has_model_data());

  psyserve::TellRequest by_stimulus;
  by_stimulus.stimuli = {{{"c", 0.5}, {"a", -0.25}}};
  by_stimulus.outcomes = {{"", 0.0, std::nullopt}};
  wire = internal::to_pb(by_stimulus, 2);
  ASSERT_EQ(wire.target_case(), pb::TellRequest::kStimuli);
  EXPECT_DOUBLE_EQ(wire.stimuli().stimuli(0).values().at("a").number(), -0.25);
}

TEST(Convert, TellNeedsExactlyOneTargetAndAnOutcome) {
  psyserve::TellRequest tell;
  tell.outcomes = {{"", 1.0, std::nullopt}};
  try {
    internal::to_pb(tell, 1);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.field(), "trial_id");
  }
  tell.trial_id = 3;
  tell.stimuli = {{{"c", 0.5}}};
  EXPECT_THROW(internal::to_pb(tell, 1), Error);
  tell.stimuli.clear();
  tell.outcomes.clear();
  try {
    internal::to_pb(tell, 1);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.field(), "outcomes");
  }
}

TEST(Convert, QueryRequest) {
  psyserve::QueryRequest query;
  query.type = psyserve::QueryType::kInverse;
  query.probability_space = true;
  query.y = 0.75;
  query.constraints = {{"c", 0.0}};
  auto wire = internal::to_pb(query, 5);
  EXPECT_EQ(wire.query_type(), pb::QUERY_TYPE_INVERSE);
  EXPECT_TRUE(wire.has_y());
  EXPECT_DOUBLE_EQ(wire.y(), 0.75);
  EXPECT_DOUBLE_EQ(wire.constraints().at("c").number(), 0.0);
  query.type = psyserve::QueryType::kMax;
  query.y.reset();
  EXPECT_FALSE(internal::to_pb(query, 5).has_y());
  EXPECT_EQ(internal::to_pb(query, 5).query_type(), pb::QUERY_TYPE_MAX);
  EXPECT_EQ(internal::to_pb(query, 5).outcome(), "");
  query.outcome = "rating";  // several outcomes: which one's model answers
  EXPECT_EQ(internal::to_pb(query, 5).outcome(), "rating");
}

TEST(Convert, OrdinalQueryReply) {
  pb::QueryResponse reply;
  reply.set_outcome("liking");
  auto* p = reply.add_predictions();
  p->set_probability(2.4);  // the expected level
  for (double v : {0.1, 0.2, 0.3, 0.25, 0.15}) p->add_level_probabilities(v);
  auto result = internal::from_pb(reply);
  EXPECT_EQ(result.outcome, "liking");
  ASSERT_EQ(result.predictions.size(), 1u);
  EXPECT_EQ(result.predictions[0].level_probabilities, (std::vector<double>{0.1, 0.2, 0.3, 0.25, 0.15}));
  EXPECT_DOUBLE_EQ(result.predictions[0].probability, 2.4);
}

TEST(Convert, TrialAndAskReply) {
  pb::AskResponse reply;
  reply.set_is_finished(true);
  reply.set_precomputed(true);
  reply.set_phase_name("opt_strat");
  reply.set_phase_index(1);
  reply.mutable_timings()->set_fit_seconds(0.04);
  auto* trial = reply.add_trials();
  trial->set_trial_id(12);
  trial->set_state(pb::TRIAL_STATE_COMPLETED);
  auto& values = *trial->add_stimuli()->mutable_values();
  values["contrast"].set_number(0.3);
  values["frequency"].set_integer(8);
  values["shape"].set_category("gabor");
  values["eye"].set_flag(true);
  auto* outcome = trial->add_outcomes();
  outcome->set_value(1);
  outcome->set_sem(0.1);
  (*trial->mutable_metadata())["rt"] = "0.5";

  auto result = internal::from_pb(reply);
  EXPECT_TRUE(result.is_finished);
  EXPECT_TRUE(result.precomputed);
  EXPECT_EQ(result.phase_name, "opt_strat");
  EXPECT_DOUBLE_EQ(result.timings.fit_seconds, 0.04);
  const auto& t = result.trial();
  EXPECT_EQ(t.trial_id, 12);
  EXPECT_EQ(t.state, psyserve::TrialState::kCompleted);
  EXPECT_DOUBLE_EQ(t["contrast"].as_number(), 0.3);
  EXPECT_EQ(t["frequency"].as_integer(), 8);
  EXPECT_EQ(t["shape"].as_category(), "gabor");
  EXPECT_TRUE(t["eye"].as_flag());
  ASSERT_EQ(t.outcomes.size(), 1u);
  EXPECT_EQ(t.outcomes[0].sem, 0.1);
  EXPECT_EQ(t.metadata.at("rt"), "0.5");
  try {
    (void)t["missing"];
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.field(), "missing");
  }
  EXPECT_THROW((void)psyserve::AskResult().trial(), Error);
}

TEST(Convert, ParameterAndTrialStates) {
  pb::Parameter p;
  p.set_name("shape");
  p.set_type(pb::PARAMETER_TYPE_CATEGORICAL);
  p.add_choices("circle");
  p.add_choices("square");
  auto parameter = internal::from_pb(p);
  EXPECT_EQ(parameter.type, psyserve::ParameterType::kCategorical);
  EXPECT_EQ(parameter.choices, (std::vector<std::string>{"circle", "square"}));
  EXPECT_TRUE(parameter.fixed_value.is_none());
  p.set_type(pb::PARAMETER_TYPE_FIXED);
  p.mutable_fixed_value()->set_category("gabor");
  EXPECT_EQ(internal::from_pb(p).fixed_value, Value("gabor"));
  EXPECT_EQ(internal::to_pb(psyserve::TrialState::kAbandoned), pb::TRIAL_STATE_ABANDONED);
  EXPECT_EQ(internal::to_pb(psyserve::TrialState::kUnspecified), pb::TRIAL_STATE_UNSPECIFIED);
}

// ------------------------------------------------------------------ errors

TEST(Errors, FieldFromTheServersOwnEncoding) {
  EXPECT_EQ(internal::bad_request_field(from_hex(kPythonStatusHex)), "strategy_id");
}

TEST(Errors, FieldFromHandEncodedStatus) {
  std::string bad_request = violation("[common] parnames", "missing") + violation("other", "x");
  std::string status = varint_field(1, 3) + bytes_field(2, "bad config") + bytes_field(3, any("google.rpc.BadRequest", bad_request));
  EXPECT_EQ(internal::bad_request_field(status), "[common] parnames");
}

TEST(Errors, NoFieldWhenAbsentOrMalformed) {
  EXPECT_EQ(internal::bad_request_field(""), "");
  std::string only_other = varint_field(1, 5) + bytes_field(3, any("google.rpc.DebugInfo", bytes_field(1, "x")));
  EXPECT_EQ(internal::bad_request_field(only_other), "");
  std::string full = from_hex(kPythonStatusHex);
  for (std::size_t cut = 0; cut < full.size(); ++cut) {  // every truncation: no crash, never a wrong field
    std::string field = internal::bad_request_field(full.substr(0, cut));
    EXPECT_TRUE(field.empty() || field == "strategy_id") << cut;
  }
  EXPECT_EQ(internal::bad_request_field(std::string("\xff\xff\xff\xff\xff\xff", 6)), "");
}

TEST(Errors, StatusMapsToTypedError) {
  Error e = internal::error_from_status(5, "strategy_id 99 not found", from_hex(kPythonStatusHex));
  EXPECT_EQ(e.code(), StatusCode::kNotFound);
  EXPECT_EQ(e.message(), "strategy_id 99 not found");
  EXPECT_EQ(e.field(), "strategy_id");
  EXPECT_STREQ(e.what(), "NOT_FOUND: strategy_id 99 not found [field: strategy_id]");
  Error deadline = internal::error_from_status(4, "Deadline Exceeded", "");
  EXPECT_EQ(deadline.code(), StatusCode::kDeadlineExceeded);
  EXPECT_EQ(deadline.field(), "");
  EXPECT_STREQ(deadline.what(), "DEADLINE_EXCEEDED: Deadline Exceeded");
  EXPECT_EQ(internal::error_from_status(99, "?", "").code(), StatusCode::kUnknown);
  EXPECT_EQ(internal::error_from_status(-1, "?", "").code(), StatusCode::kUnknown);
}

TEST(Errors, CodeNames) {
  EXPECT_STREQ(psyserve::status_code_name(StatusCode::kInvalidArgument), "INVALID_ARGUMENT");
  EXPECT_STREQ(psyserve::status_code_name(StatusCode::kFailedPrecondition), "FAILED_PRECONDITION");
  EXPECT_STREQ(psyserve::status_code_name(StatusCode::kUnauthenticated), "UNAUTHENTICATED");
  EXPECT_STREQ(psyserve::status_code_name(StatusCode::kOk), "OK");
}
