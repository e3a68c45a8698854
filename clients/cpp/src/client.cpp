// psyserve::Client: blocking and future-returning calls on the generated ExperimentService stub.
// Owns the channel, deadlines, the Bearer token and the current strategy; conversions are in convert.cpp.
#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "internal.h"
#include "psyserve/v1/service.grpc.pb.h"

namespace psyserve {

using internal::from_pb;
using internal::to_pb;
namespace pb = ::psyserve::v1;

namespace {
// One started non-blocking call: the completion queue's tag. complete() runs on the poller thread.
struct PendingCall {
  virtual ~PendingCall() = default;
  virtual void complete() = 0;
};
}  // namespace

struct Client::Impl {
  std::string address;
  ClientOptions options;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<pb::ExperimentService::Stub> stub;
  std::atomic<std::int64_t> strategy_id{0};
  // Non-blocking calls use gRPC's classic async API on this client's own completion queue:
  // the dispatcher thread starts them (the caller's thread only converts and queues the request:
  // no socket write there), the poller thread completes them. Not the callback API: with Debian's
  // gRPC 1.51 its shared callback completion queue is torn down with the last channel that used it
  // and raced a new one (ref-count assertion abort when Clients came and went).
  grpc::CompletionQueue completion_queue;
  std::mutex mutex;
  std::condition_variable changed;
  std::deque<std::function<void()>> jobs;
  int in_flight = 0;  // queued or started, not yet completed; the destructor waits for them
  bool stopping = false;
  std::once_flag threads_started;
  std::thread dispatcher, poller;

  ~Impl() {
    {
      std::unique_lock<std::mutex> lock(mutex);
      changed.wait(lock, [this] { return in_flight == 0; });  // each call has a deadline
      stopping = true;
    }
    changed.notify_all();
    if (dispatcher.joinable()) dispatcher.join();
    completion_queue.Shutdown();
    if (poller.joinable()) {
      poller.join();
    } else {
      void* tag = nullptr;
      bool ok = false;
      while (completion_queue.Next(&tag, &ok)) {
      }
    }
  }

  void post(std::function<void()> job) {
    std::call_once(threads_started, [this] {
      dispatcher = std::thread([this] { dispatch(); });
      poller = std::thread([this] { poll(); });
    });
    {
      std::lock_guard<std::mutex> lock(mutex);
      ++in_flight;
      jobs.push_back(std::move(job));
    }
    changed.notify_all();
  }

  void dispatch() {
    std::unique_lock<std::mutex> lock(mutex);
    while (true) {
      changed.wait(lock, [this] { return stopping || !jobs.empty(); });
      if (jobs.empty()) return;  // stopping, and nothing left
      auto job = std::move(jobs.front());
      jobs.pop_front();
      lock.unlock();
      job();
      lock.lock();
    }
  }

  void poll() {
    void* tag = nullptr;
    bool ok = false;
    while (completion_queue.Next(&tag, &ok)) {
      static_cast<PendingCall*>(tag)->complete();  // sets the promise and deletes itself
      {
        std::lock_guard<std::mutex> lock(mutex);
        --in_flight;
      }
      changed.notify_all();
    }
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

// One non-blocking call: what gRPC writes into, and the promise the caller's future reads.
template <typename Response, typename Result>
struct AsyncCall : PendingCall {
  grpc::ClientContext context;
  Response response;
  grpc::Status status;
  std::promise<Result> promise;
  std::unique_ptr<grpc::ClientAsyncResponseReader<Response>> reader;

  void complete() override {
    if (status.ok()) {
      try {
        promise.set_value(from_pb(response));
      } catch (...) {
        promise.set_exception(std::current_exception());
      }
    } else {
      promise.set_exception(std::make_exception_ptr(
          internal::error_from_status(status.error_code(), status.error_message(), status.error_details())));
    }
    delete this;
  }
};

}  // namespace

Client::Client(const std::string& address, ClientOptions options) : impl_(std::make_shared<Impl>()) {
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

template <typename Result, typename Response, typename Request, typename Prepare>
std::future<Result> Client::start_async(Request request, const CallOptions& call, Prepare prepare_async) {
  auto* pending = new AsyncCall<Response, Result>();
  impl_->prepare(pending->context, call);  // the deadline counts from now
  auto future = pending->promise.get_future();
  Impl* impl = impl_.get();
  impl->post([impl, pending, prepare_async, request = std::move(request)] {
    pending->reader = ((*impl->stub).*prepare_async)(&pending->context, request, &impl->completion_queue);
    pending->reader->StartCall();
    pending->reader->Finish(&pending->response, &pending->status, static_cast<PendingCall*>(pending));
  });
  return future;
}

std::future<AskResult> Client::ask_async(const AskRequest& request, const CallOptions& call) {
  return start_async<AskResult, pb::AskResponse>(to_pb(request, impl_->resolve(request.strategy_id)), call,
                                                 &pb::ExperimentService::Stub::PrepareAsyncAsk);
}

std::future<TellResult> Client::tell_async(const TellRequest& request, const CallOptions& call) {
  return start_async<TellResult, pb::TellResponse>(to_pb(request, impl_->resolve(request.strategy_id)), call,
                                                   &pb::ExperimentService::Stub::PrepareAsyncTell);
}

}  // namespace psyserve
