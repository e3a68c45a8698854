// psyserve::Value accessors and the small helpers on result types (Trial[], AskResult::trial()).
// Pure C++: no protobuf or gRPC here.
#include <charconv>

#include "psyserve/client.h"

namespace psyserve {
namespace {

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNone: return "none";
    case Value::Kind::kNumber: return "a number";
    case Value::Kind::kInteger: return "an integer";
    case Value::Kind::kCategory: return "a category";
    case Value::Kind::kFlag: return "a flag";
  }
  return "?";
}

[[noreturn]] void wrong_kind(Value::Kind have, const char* want) {
  throw Error(StatusCode::kInvalidArgument, std::string("value is ") + kind_name(have) + ", not " + want);
}

}  // namespace

double Value::as_number() const {
  if (!is_number()) wrong_kind(kind(), "a number");
  return std::get<double>(v_);
}

std::int64_t Value::as_integer() const {
  if (!is_integer()) wrong_kind(kind(), "an integer");
  return std::get<std::int64_t>(v_);
}

const std::string& Value::as_category() const {
  if (!is_category()) wrong_kind(kind(), "a category");
  return std::get<std::string>(v_);
}

bool Value::as_flag() const {
  if (!is_flag()) wrong_kind(kind(), "a flag");
  return std::get<bool>(v_);
}

double Value::to_double() const {
  switch (kind()) {
    case Kind::kNumber: return std::get<double>(v_);
    case Kind::kInteger: return static_cast<double>(std::get<std::int64_t>(v_));
    case Kind::kFlag: return std::get<bool>(v_) ? 1.0 : 0.0;
    default: wrong_kind(kind(), "numeric");
  }
}

std::string Value::to_string() const {
  switch (kind()) {
    case Kind::kNone: return "none";
    case Kind::kNumber: {
      char buffer[32];  // shortest text that reads back as the same double
      auto end = std::to_chars(buffer, buffer + sizeof buffer, std::get<double>(v_)).ptr;
      return std::string(buffer, end);
    }
    case Kind::kInteger: return std::to_string(std::get<std::int64_t>(v_));
    case Kind::kCategory: return std::get<std::string>(v_);
    case Kind::kFlag: return std::get<bool>(v_) ? "true" : "false";
  }
  return "none";
}

const Value& Trial::operator[](const std::string& parameter) const {
  if (stimuli.empty()) throw Error(StatusCode::kInvalidArgument, "trial has no stimulus", "stimuli");
  auto it = stimuli.front().find(parameter);
  if (it == stimuli.front().end()) {
    throw Error(StatusCode::kInvalidArgument, "trial has no parameter named '" + parameter + "'", parameter);
  }
  return it->second;
}

const Trial& AskResult::trial() const {
  if (trials.empty()) throw Error(StatusCode::kInvalidArgument, "the ask returned no trials", "trials");
  return trials.front();
}

}  // namespace psyserve
