// psyserve::Client: blocking and future-returning calls on the generated ExperimentService stub.
// Owns the channel, deadlines, the Bearer token and the current strategy; conversions are in convert.cpp.
#include <grpc/grpc.h>
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <fstream>
#include <sstream>

#include "internal.h"
#include "psyserve/v1/service.grpc.pb.h"

namespace psyserve {

using internal::from_pb;
using internal::to_pb;
namespace pb = ::psyserve::v1;

struct Client::Impl {
  std::string address;
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::ExperimentService::Stub> stub;
  std::atomic<std::int64_t> strategy_id{0};
  // Non-blocking calls still running; the destructor waits for them (each has a deadline).
  std::mutex in_flight_mutex;
  std::condition_variable in_flight_done;
  int in_flight = 0;

  ~Impl() {
    std::unique_lock<std::mutex> lock(in_flight_mutex);
    in_flight_done.wait(lock, [this] { return in_flight == 0; });
  }

  void started() {
    std::lock_guard<std::mutex> lock(in_flight_mutex);
    ++in_flight;
  }

  void finished() {
    std::lock_guard<std::mutex> lock(in_flight_mutex);
    --in_flight;
    in_flight_done.notify_all();
  }

  void prepare(grpc::ClientContext& context, const CallOptions& call) const {
    auto timeout = call.timeout.count() > 0 ? call.timeout : options.timeout;
    if (timeout.count() <= 0) timeout = std::chrono::milliseconds(60000);
    context.set_deadline(std::chrono::system_clock::now() + timeout);
    if (!options.token.empty()) context.AddMetadata("authorization", "Bearer " + options.token);
  }

  std::int64_t resolve(std::int64_t requested) const {
    std::int64_t sid = requested != 0 ? requested : strategy_id.load();
    if (sid == 0) {
      throw Error(StatusCode::kFailedPrecondition,
                  "no strategy: call configure() or resume() first, or set strategy_id", "strategy_id");
    }
    return sid;
  }

  // One blocking call: deadline + token, status checked, reply returned.
  template <typename Response, typename Request, typename Method>
  Response call(Method method, const Request& request, const CallOptions& options_for_call) {
    grpc::ClientContext context;
    prepare(context, options_for_call);
    Response response;
    grpc::Status status = ((*stub).*method)(&context, request, &response);
    if (!status.ok()) throw internal::error_from_status(status.error_code(), status.error_message(), status.error_details());
    return response;
  }
};

namespace {

// The state of one non-blocking call; lives until gRPC's callback has run.
template <typename Request, typename Response, typename Result>
struct AsyncCall {
  grpc::ClientContext context;
  Request request;
  Response response;
  std::promise<Result> promise;
};

// prepare(context) sets deadline and token; start(context, request, response, done) starts the
// call on the stub's callback API; finished() runs after the promise is set, as the last step.
template <typename Result, typename Request, typename Response, typename Prepare, typename Start, typename Finished>
std::future<Result> start_async(Request request, Prepare prepare, Start start, Finished finished) {
  auto state = std::make_shared<AsyncCall<Request, Response, Result>>();
  state->request = std::move(request);
  prepare(state->context);
  auto future = state->promise.get_future();
  start(&state->context, &state->request, &state->response, [state, finished](grpc::Status status) {
    if (status.ok()) {
      try {
        state->promise.set_value(from_pb(state->response));
      } catch (...) {
        state->promise.set_exception(std::current_exception());
      }
    } else {
      state->promise.set_exception(std::make_exception_ptr(
          internal::error_from_status(status.error_code(), status.error_message(), status.error_details())));
    }
    finished();
  });
  return future;
}

}  // namespace

Client::Client(const std::string& address, ClientOptions options) : impl_(std::make_shared<Impl>()) {
  // gRPC stays initialised for the life of the process. Otherwise destroying the last Client shuts
  // gRPC down while a callback thread may still be unwinding from an async call, and the next
  // Client starts it again; that cycle is what crashed (ref-count assertion) in early tests.
  static const bool grpc_initialised = (grpc_init(), true);
  (void)grpc_initialised;
  impl_->address = address;
  impl_->options = std::move(options);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(impl_->options.max_message_bytes);
  args.SetMaxSendMessageSize(impl_->options.max_message_bytes);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (!impl_->options.root_certificates.empty() || impl_->options.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = impl_->options.root_certificates;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  impl_->channel = grpc::CreateCustomChannel(address, credentials, args);
  impl_->stub = pb::ExperimentService::NewStub(impl_->channel);
}

Client::~Client() = default;
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;

std::int64_t Client::strategy_id() const noexcept { return impl_->strategy_id.load(); }
const std::string& Client::address() const noexcept { return impl_->address; }

void Client::wait_ready(std::chrono::milliseconds timeout) {
  if (!impl_->channel->WaitForConnected(std::chrono::system_clock::now() + timeout)) {
    throw Error(StatusCode::kUnavailable, "could not connect to " + impl_->address + " within " +
                                              std::to_string(timeout.count()) + " ms");
  }
}

ConfigureResult Client::configure(const ConfigureRequest& request, const CallOptions& call) {
  pb::ConfigureRequest req;
  req.set_config_ini(request.config_ini);
  req.set_name(request.name);
  req.mutable_metadata()->insert(request.metadata.begin(), request.metadata.end());
  req.set_request_id(request.request_id);
  auto result = from_pb(impl_->call<pb::ConfigureResponse>(&pb::ExperimentService::Stub::Configure, req, call));
  impl_->strategy_id.store(result.strategy_id);
  return result;
}

ConfigureResult Client::configure(const std::string& config_ini, const std::string& name, const CallOptions& call) {
  ConfigureRequest request;
  request.config_ini = config_ini;
  request.name = name;
  return configure(request, call);
}

ConfigureResult Client::configure_file(const std::string& path, const std::string& name, const CallOptions& call) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw Error(StatusCode::kNotFound, "config_path: cannot read " + path, "config_path");
  std::ostringstream text;
  text << file.rdbuf();
  return configure(text.str(), name, call);
}

StrategySummary Client::resume(std::int64_t strategy_id, const CallOptions& call) {
  pb::ResumeRequest req;
  req.set_strategy_id(strategy_id);
  auto summary = from_pb(impl_->call<pb::ResumeResponse>(&pb::ExperimentService::Stub::Resume, req, call).summary());
  impl_->strategy_id.store(summary.strategy_id);
  return summary;
}

StrategySummary Client::resume(const std::string& name, const CallOptions& call) {
  pb::ResumeRequest req;
  req.set_name(name);
  auto summary = from_pb(impl_->call<pb::ResumeResponse>(&pb::ExperimentService::Stub::Resume, req, call).summary());
  impl_->strategy_id.store(summary.strategy_id);
  return summary;
}

AskResult Client::ask(const AskRequest& request, const CallOptions& call) {
  auto req = to_pb(request, impl_->resolve(request.strategy_id));
  return from_pb(impl_->call<pb::AskResponse>(&pb::ExperimentService::Stub::Ask, req, call));
}

AskResult Client::ask(int num_points, const Stimulus& fixed, const CallOptions& call) {
  AskRequest request;
  request.num_points = num_points;
  request.fixed = fixed;
  return ask(request, call);
}

TellResult Client::tell(const TellRequest& request, const CallOptions& call) {
  auto req = to_pb(request, impl_->resolve(request.strategy_id));
  return from_pb(impl_->call<pb::TellResponse>(&pb::ExperimentService::Stub::Tell, req, call));
}

TellResult Client::tell(std::int64_t trial_id, double outcome, const Metadata& metadata, const CallOptions& call) {
  TellRequest request;
  request.trial_id = trial_id;
  request.outcomes.push_back(Outcome{"", outcome, std::nullopt});
  request.metadata = metadata;
  return tell(request, call);
}

TellResult Client::tell(const Stimulus& stimulus, double outcome, const Metadata& metadata, const CallOptions& call) {
  TellRequest request;
  request.stimuli.push_back(stimulus);
  request.outcomes.push_back(Outcome{"", outcome, std::nullopt});
  request.metadata = metadata;
  return tell(request, call);
}

QueryResult Client::query(const QueryRequest& request, const CallOptions& call) {
  auto req = to_pb(request, impl_->resolve(request.strategy_id));
  return from_pb(impl_->call<pb::QueryResponse>(&pb::ExperimentService::Stub::Query, req, call));
}

InfoResult Client::info(std::int64_t strategy_id, const CallOptions& call) {
  pb::InfoRequest req;
  req.set_strategy_id(impl_->resolve(strategy_id));
  return from_pb(impl_->call<pb::InfoResponse>(&pb::ExperimentService::Stub::Info, req, call));
}

std::vector<Trial> Client::list_trials(TrialState state, std::int64_t strategy_id, const CallOptions& call) {
  pb::ListTrialsRequest req;
  req.set_strategy_id(impl_->resolve(strategy_id));
  req.set_state(internal::to_pb(state));
  auto reply = impl_->call<pb::ListTrialsResponse>(&pb::ExperimentService::Stub::ListTrials, req, call);
  std::vector<Trial> trials;
  trials.reserve(reply.trials_size());
  for (const auto& t : reply.trials()) trials.push_back(from_pb(t));
  return trials;
}

Trial Client::abandon_trial(std::int64_t trial_id, bool failed, const std::string& reason, std::int64_t strategy_id,
                            const CallOptions& call) {
  pb::AbandonTrialRequest req;
  req.set_strategy_id(impl_->resolve(strategy_id));
  req.set_trial_id(trial_id);
  req.set_failed(failed);
  req.set_reason(reason);
  return from_pb(impl_->call<pb::AbandonTrialResponse>(&pb::ExperimentService::Stub::AbandonTrial, req, call).trial());
}

std::future<AskResult> Client::ask_async(const AskRequest& request, const CallOptions& call) {
  auto req = to_pb(request, impl_->resolve(request.strategy_id));
  Impl* impl = impl_.get();
  auto* stub = impl->stub->async();
  impl->started();
  return start_async<AskResult, pb::AskRequest, pb::AskResponse>(
      std::move(req), [impl, &call](grpc::ClientContext& context) { impl->prepare(context, call); },
      [stub](auto* context, auto* rq, auto* rs, auto done) { stub->Ask(context, rq, rs, std::move(done)); },
      [impl] { impl->finished(); });
}


std::future<TellResult> Client::tell_async(const TellRequest& request, const CallOptions& call) {
  auto req = to_pb(request, impl_->resolve(request.strategy_id));
  Impl* impl = impl_.get();
  auto* stub = impl->stub->async();
  impl->started();
  return start_async<TellResult, pb::TellRequest, pb::TellResponse>(
      std::move(req), [impl, &call](grpc::ClientContext& context) { impl->prepare(context, call); },
      [stub](auto* context, auto* rq, auto* rs, auto done) { stub->Tell(context, rq, rs, std::move(done)); },
      [impl] { impl->finished(); });
}


}  // namespace psyserve
