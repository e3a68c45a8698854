// psyserve::Error and the decoding of a failed call's status (code, message, BadRequest field).
// Reads google.rpc.Status from its wire format, so no googleapis protos are needed at build time.
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>

#include <string>

#include "internal.h"

namespace psyserve {

const char* status_code_name(StatusCode code) noexcept {
  switch (code) {
    case StatusCode::kOk: return "OK";
    case StatusCode::kCancelled: return "CANCELLED";
    case StatusCode::kUnknown: return "UNKNOWN";
    case StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case StatusCode::kNotFound: return "NOT_FOUND";
    case StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case StatusCode::kAborted: return "ABORTED";
    case StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case StatusCode::kInternal: return "INTERNAL";
    case StatusCode::kUnavailable: return "UNAVAILABLE";
    case StatusCode::kDataLoss: return "DATA_LOSS";
    case StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
  }
  return "UNKNOWN";
}

namespace {
std::string describe(StatusCode code, const std::string& message, const std::string& field) {
  std::string text = std::string(status_code_name(code)) + ": " + message;
  if (!field.empty()) text += " [field: " + field + "]";
  return text;
}
}  // namespace

Error::Error(StatusCode code, std::string message, std::string field)
    : std::runtime_error(describe(code, message, field)),
      code_(code),
      message_(std::move(message)),
      field_(std::move(field)) {}

namespace internal {
namespace {

using google::protobuf::io::CodedInputStream;
using WFL = google::protobuf::internal::WireFormatLite;

// Calls on_field(number, bytes) for each length-delimited field of a message; skips the others.
// Returns false if the bytes are not a well-formed message.
template <typename F>
bool for_each_bytes_field(const std::string& data, F&& on_field) {
  CodedInputStream in(reinterpret_cast<const std::uint8_t*>(data.data()), static_cast<int>(data.size()));
  while (true) {
    std::uint32_t tag = in.ReadTag();
    if (tag == 0) return in.ConsumedEntireMessage() || in.CurrentPosition() == static_cast<int>(data.size());
    if (WFL::GetTagWireType(tag) == WFL::WIRETYPE_LENGTH_DELIMITED) {
      std::uint32_t length = 0;
      std::string bytes;
      if (!in.ReadVarint32(&length) || !in.ReadString(&bytes, static_cast<int>(length))) return false;
      if (!on_field(WFL::GetTagFieldNumber(tag), bytes)) return true;  // the callback is done
    } else if (!WFL::SkipField(&in, tag)) {
      return false;
    }
  }
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string bad_request_field(const std::string& status_details) {
  // google.rpc.Status { repeated google.protobuf.Any details = 3; }
  // google.protobuf.Any { string type_url = 1; bytes value = 2; }
  // google.rpc.BadRequest { repeated FieldViolation field_violations = 1; }
  // FieldViolation { string field = 1; string description = 2; }
  std::string found;
  for_each_bytes_field(status_details, [&](int number, const std::string& any) {
    if (number != 3) return true;
    std::string type_url, value;
    for_each_bytes_field(any, [&](int n, const std::string& b) {
      if (n == 1) type_url = b;
      if (n == 2) value = b;
      return true;
    });
    if (!ends_with(type_url, "/google.rpc.BadRequest")) return true;
    for_each_bytes_field(value, [&](int n, const std::string& violation) {
      if (n != 1) return true;
      for_each_bytes_field(violation, [&](int m, const std::string& b) {
        if (m == 1 && found.empty()) found = b;
        return found.empty();
      });
      return found.empty();
    });
    return found.empty();
  });
  return found;
}

Error error_from_status(int code, const std::string& message, const std::string& status_details) {
  StatusCode status = (code >= 0 && code <= 16) ? static_cast<StatusCode>(code) : StatusCode::kUnknown;
  return Error(status, message, bad_request_field(status_details));
}

}  // namespace internal
}  // namespace psyserve
