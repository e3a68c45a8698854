// psyserve C++ client: psyserve::Client and the plain value types it takes and returns.
// Owns the public API only; no protobuf or gRPC types appear here (they stay in src/).
#pragma once

#include <chrono>
#include <cstdint>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

namespace psyserve {

// ------------------------------------------------------------------ errors

// gRPC status codes (the same numbers as grpc::StatusCode and google.rpc.Code).
enum class StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// "NOT_FOUND" for kNotFound, and so on.
const char* status_code_name(StatusCode code) noexcept;

// The one exception this library throws: an RPC failed (server status, deadline, connection), or
// a request or value was wrong before it was sent. field() names the request field or config key
// at fault (from the server's google.rpc.BadRequest detail), or is empty.
class Error : public std::runtime_error {
 public:
  Error(StatusCode code, std::string message, std::string field = {});
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& field() const noexcept { return field_; }

 private:
  StatusCode code_;
  std::string message_;
  std::string field_;
};

// ------------------------------------------------------------------ values

// One parameter value, typed as on the wire: number (continuous), integer, category, flag (binary).
class Value {
 public:
  enum class Kind { kNone, kNumber, kInteger, kCategory, kFlag };

  Value() = default;
  Value(double number) : v_(number) {}
  Value(int integer) : v_(static_cast<std::int64_t>(integer)) {}
  Value(long integer) : v_(static_cast<std::int64_t>(integer)) {}
  Value(long long integer) : v_(static_cast<std::int64_t>(integer)) {}
  Value(bool flag) : v_(flag) {}
  Value(const char* category) : v_(std::string(category)) {}
  Value(std::string category) : v_(std::move(category)) {}

  static Value number(double x) { return Value(x); }
  static Value integer(std::int64_t x) { return Value(static_cast<long long>(x)); }
  static Value category(std::string x) { return Value(std::move(x)); }
  static Value flag(bool x) { return Value(x); }

  Kind kind() const noexcept { return static_cast<Kind>(v_.index()); }
  bool is_none() const noexcept { return kind() == Kind::kNone; }
  bool is_number() const noexcept { return kind() == Kind::kNumber; }
  bool is_integer() const noexcept { return kind() == Kind::kInteger; }
  bool is_category() const noexcept { return kind() == Kind::kCategory; }
  bool is_flag() const noexcept { return kind() == Kind::kFlag; }

  // Strict accessors: throw Error(kInvalidArgument) when the value is of another kind.
  double as_number() const;
  std::int64_t as_integer() const;
  const std::string& as_category() const;
  bool as_flag() const;

  // Lenient: number, integer or flag (0/1) as a double; throws Error for a category or none.
  double to_double() const;
  // Printable form: 0.25, 3, "gabor" (unquoted), true/false, or "none".
  std::string to_string() const;

  friend bool operator==(const Value& a, const Value& b) { return a.v_ == b.v_; }
  friend bool operator!=(const Value& a, const Value& b) { return !(a == b); }

 private:
  std::variant<std::monostate, double, std::int64_t, std::string, bool> v_;
};

// One stimulus: a value per parameter name.
using Stimulus = std::map<std::string, Value>;
using Metadata = std::map<std::string, std::string>;

// ------------------------------------------------------------------ results

enum class ParameterType { kUnspecified, kContinuous, kInteger, kBinary, kFixed, kCategorical };
enum class OutcomeType { kUnspecified, kBinary, kContinuous, kOrdinal };
enum class TrialState { kUnspecified, kPending, kCompleted, kFailed, kAbandoned };
enum class QueryType { kMax, kMin, kPrediction, kInverse };

struct Parameter {
  std::string name;
  ParameterType type = ParameterType::kUnspecified;
  double lower_bound = 0;  // raw units
  double upper_bound = 0;
  bool log_scale = false;
  std::vector<std::string> choices;  // categorical
  Value fixed_value;                 // fixed parameters; none otherwise
};

// One observed outcome. name may stay empty when the experiment has one outcome.
struct Outcome {
  std::string name;
  double value = 0;
  std::optional<double> sem;  // standard error of a continuous outcome
};

struct Trial {
  std::int64_t trial_id = 0;
  std::vector<Stimulus> stimuli;  // one, or two for pairwise experiments
  TrialState state = TrialState::kUnspecified;
  int phase_index = 0;
  std::string phase_name;
  std::vector<Outcome> outcomes;
  Metadata metadata;
  double asked_at = 0;  // seconds since the Unix epoch
  double told_at = 0;
  bool model_data = false;

  // The first stimulus's value for a parameter; throws Error(kInvalidArgument) naming it if absent.
  const Value& operator[](const std::string& parameter) const;
};

struct Timings {
  double fit_seconds = 0;
  double generate_seconds = 0;
  double wait_seconds = 0;
};

struct Phase {
  int index = 0;
  std::string name, generator, model, acqf;
  std::int64_t asks = 0;
  bool finished = false;
};

struct StrategySummary {
  std::int64_t strategy_id = 0;
  std::string name;
  Metadata metadata;
  std::vector<Phase> phases;
  int current_phase_index = 0;
  bool is_finished = false;
  std::int64_t trials_asked = 0, trials_completed = 0, trials_pending = 0, model_data_points = 0;
  double created_at = 0;
  std::vector<Parameter> parameters;
  int stimuli_per_trial = 1;
  std::vector<OutcomeType> outcome_types;
  std::vector<std::string> outcome_names;
};

struct ConfigureResult {
  std::int64_t strategy_id = 0;
  std::vector<Parameter> parameters;
  std::vector<std::string> warnings;  // unused config keys and other non-fatal remarks
  StrategySummary summary;
};

struct AskResult {
  std::vector<Trial> trials;
  bool is_finished = false;
  bool precomputed = false;  // computed before the request arrived
  Timings timings;
  int phase_index = 0;
  std::string phase_name;

  // The first trial; throws Error(kInvalidArgument) when there is none.
  const Trial& trial() const;
};

struct TellResult {
  std::int64_t trial_id = 0;
  int trials_recorded = 0;
  int model_data_added = 0;
  bool duplicate = false;  // this tell was recorded before (a retry)
  std::int64_t trials_completed = 0;
  bool is_finished = false;
};

struct Prediction {
  Stimulus x;
  double mean = 0, variance = 0;  // latent
  double probability = 0;         // P(positive) for classification; ordinal: the expected level; else the mean
  double lower = 0, upper = 0;    // 95% interval
  std::vector<double> level_probabilities;  // ordinal outcomes: P(level k), k = 0..n_levels-1
};

struct QueryResult {
  QueryType type = QueryType::kMax;
  bool probability_space = false;
  std::vector<Prediction> predictions;
  double fit_seconds = 0;
  std::string outcome;  // the outcome whose model answered
};

struct InfoResult {
  std::int64_t strategy_id = 0;
  std::string db_name;
  int strat_count = 0;
  std::vector<std::string> all_strat_names;
  int current_strat_index = 0;
  std::string current_strat_name;
  std::int64_t current_strat_data_pts = 0;
  std::string current_strat_model, current_strat_acqf;
  bool current_strat_finished = false;
  bool current_strat_can_fit = false;
  StrategySummary summary;
};

// ------------------------------------------------------------------ requests
// strategy_id 0 everywhere means the client's current strategy (set by configure and resume).

struct ConfigureRequest {
  std::string config_ini;  // AEPsych-style INI text
  std::string name;        // optional unique name, for resume(name)
  Metadata metadata;       // merged over the config's [metadata]
  std::string request_id;  // optional: a retried configure returns the first reply
};

struct AskRequest {
  int num_points = 1;
  Stimulus fixed;           // parameters held at these values, by name
  std::string request_id;   // optional: a retried ask returns the same trials
  double ttl_seconds = 0;   // optional lease; 0 = none
  std::int64_t strategy_id = 0;
};

struct TellRequest {
  std::int64_t trial_id = 0;      // the asked trial; or leave 0 and give stimuli
  std::vector<Stimulus> stimuli;  // a stimulus that was not asked for (two for pairwise)
  std::vector<Outcome> outcomes;  // one, or one per named outcome
  std::optional<bool> model_data; // default: the server's (true)
  Metadata metadata;              // e.g. {"rt", "0.42"}
  std::string request_id;         // makes a retried stimulus tell safe
  std::int64_t strategy_id = 0;
};

struct QueryRequest {
  QueryType type = QueryType::kMax;
  bool probability_space = false;
  std::vector<Stimulus> x;   // prediction: the points
  std::optional<double> y;   // inverse: the target
  Stimulus constraints;      // parameters held fixed, by name
  std::int64_t strategy_id = 0;
  std::string outcome;       // several outcomes (IndependentGPsModel): which one's model; empty: the first
};

// Per-call options. timeout 0 = the client's default; every call has a deadline.
struct CallOptions {
  std::chrono::milliseconds timeout{0};
};

struct ClientOptions {
  std::chrono::milliseconds timeout{60000};  // default deadline of each call
  std::string token;                          // sent as "authorization: Bearer <token>"
  std::string root_certificates;              // PEM; non-empty means TLS trusting these roots
  bool tls = false;                           // TLS with the system's roots
  int max_message_bytes = 4 * 1024 * 1024;
};

// ------------------------------------------------------------------ client

// A connection to one psyserve server. Thread-safe: calls may come from several threads, and the
// *_async forms return at once (the call runs on gRPC's threads; the future holds the result or Error).
class Client {
 public:
  explicit Client(const std::string& address = "127.0.0.1:50051", ClientOptions options = {});
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;

  // Block until the channel is connected; throws Error(kUnavailable) after `timeout`.
  void wait_ready(std::chrono::milliseconds timeout = std::chrono::seconds(10));

  // Create a strategy; it becomes the current strategy.
  ConfigureResult configure(const ConfigureRequest& request, const CallOptions& call = {});
  ConfigureResult configure(const std::string& config_ini, const std::string& name = {}, const CallOptions& call = {});
  ConfigureResult configure_file(const std::string& path, const std::string& name = {}, const CallOptions& call = {});

  // Make a strategy (by id or name) the current one.
  StrategySummary resume(std::int64_t strategy_id, const CallOptions& call = {});
  StrategySummary resume(const std::string& name, const CallOptions& call = {});
  StrategySummary resume(const char* name, const CallOptions& call = {}) { return resume(std::string(name), call); }

  AskResult ask(const AskRequest& request, const CallOptions& call = {});
  AskResult ask(int num_points = 1, const Stimulus& fixed = {}, const CallOptions& call = {});

  TellResult tell(const TellRequest& request, const CallOptions& call = {});
  TellResult tell(std::int64_t trial_id, double outcome, const Metadata& metadata = {}, const CallOptions& call = {});
  TellResult tell(const Stimulus& stimulus, double outcome, const Metadata& metadata = {}, const CallOptions& call = {});

  QueryResult query(const QueryRequest& request, const CallOptions& call = {});
  InfoResult info(std::int64_t strategy_id = 0, const CallOptions& call = {});
  std::vector<Trial> list_trials(TrialState state = TrialState::kUnspecified, std::int64_t strategy_id = 0,
                                 const CallOptions& call = {});
  Trial abandon_trial(std::int64_t trial_id, bool failed = false, const std::string& reason = {},
                      std::int64_t strategy_id = 0, const CallOptions& call = {});

  // Non-blocking forms for render loops: return at once; poll with ready() or wait on the future.
  std::future<AskResult> ask_async(const AskRequest& request = {}, const CallOptions& call = {});
  std::future<TellResult> tell_async(const TellRequest& request, const CallOptions& call = {});

  // The current strategy (0 before configure/resume).
  std::int64_t strategy_id() const noexcept;
  const std::string& address() const noexcept;

 private:
  struct Impl;
  template <typename Result, typename Response, typename Request, typename Prepare>
  std::future<Result> start_async(Request request, const CallOptions& call, Prepare prepare_async);
  std::shared_ptr<Impl> impl_;
};

// True when the future's result (or error) is there: for polling from a frame loop.
template <typename T>
bool ready(const std::future<T>& future) {
  return future.valid() && future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
}

}  // namespace psyserve
