// Integration tests: psyserve::Client against a live `psyserve serve` started here on a free
// loopback port (PSYSERVE_SERVER names the executable; ctest sets it). Public API only.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "psyserve/client.h"

extern char** environ;

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using psyserve::CallOptions;
using psyserve::Client;
using psyserve::Error;
using psyserve::StatusCode;
using psyserve::Value;

namespace {

std::string env(const char* name) {
  const char* value = std::getenv(name);
  return value ? value : "";
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// Runs argv with stdout+stderr into `log`; returns the pid.
pid_t spawn(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// A `psyserve serve --port 0` subprocess; the address is read from its "psyserve listening on" line.
class ServerProcess {
 public:
  explicit ServerProcess(const std::vector<std::string>& extra) {
    std::string server = env("PSYSERVE_SERVER");
    if (server.empty()) throw std::runtime_error("set PSYSERVE_SERVER to the psyserve executable (ctest does)");
    std::string pattern = (fs::temp_directory_path() / "psyserve-cpp-XXXXXX").string();
    if (!mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp failed");
    dir_ = pattern;
    log_ = dir_ / "server.log";
    std::vector<std::string> argv{server, "serve", "--host", "127.0.0.1", "--port", "0", "--db", (dir_ / "journal.db").string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = spawn(argv, log_);
    const std::string marker = "psyserve listening on ";
    auto deadline = std::chrono::steady_clock::now() + 180s;
    while (std::chrono::steady_clock::now() < deadline) {
      std::string text = read_file(log_);
      auto at = text.find(marker);
      if (at != std::string::npos && text.find('\n', at) != std::string::npos) {
        auto start = at + marker.size();
        address_ = text.substr(start, text.find(' ', start) - start);
        return;
      }
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = 0;
        throw std::runtime_error("server exited early:\n" + text);
      }
      std::this_thread::sleep_for(50ms);
    }
    throw std::runtime_error("server did not start in 180 s:\n" + read_file(log_));
  }

  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      for (int i = 0; i < 200 && waitpid(pid_, nullptr, WNOHANG) == 0; ++i) std::this_thread::sleep_for(50ms);
      if (waitpid(pid_, nullptr, WNOHANG) == 0) {
        kill(pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
      }
    }
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  const std::string& address() const { return address_; }
  const fs::path& dir() const { return dir_; }

 private:
  pid_t pid_ = 0;
  fs::path dir_, log_;
  std::string address_;
};

// 2-D detection: a few Sobol trials, then a GP classification model with the level-set acquisition.
std::string model_config(int sobol_trials, int model_trials) {
  return "[common]\nparnames = [c, a]\nstimuli_per_trial = 1\noutcome_types = [binary]\n"
         "strategy_names = [init_strat, opt_strat]\ntarget = 0.75\nseed = 1\n"
         "[c]\npar_type = continuous\nlower_bound = -1\nupper_bound = 1\n"
         "[a]\npar_type = continuous\nlower_bound = -1\nupper_bound = 1\n"
         "[init_strat]\ngenerator = SobolGenerator\nmin_asks = " + std::to_string(sobol_trials) + "\n"
         "[opt_strat]\ngenerator = OptimizeAcqfGenerator\nmodel = GPClassificationModel\nmin_asks = " +
         std::to_string(model_trials) + "\n"
         "[OptimizeAcqfGenerator]\nacqf = MCLevelSetEstimation\n"
         "[MCLevelSetEstimation]\ntarget = 0.75\nobjective = ProbitObjective\n";
}

// A simulated observer: detects when a is above a threshold that depends on c (plus noise).
struct Observer {
  std::mt19937 random{7};
  static double threshold(double c) { return 0.4 * c * c - 0.2; }
  double respond(const psyserve::Trial& trial) {
    double latent = 8.0 * (trial["a"].as_number() - threshold(trial["c"].as_number()));
    double p = 1.0 / (1.0 + std::exp(-latent));
    return std::uniform_real_distribution<double>(0, 1)(random) < p ? 1.0 : 0.0;
  }
};

const CallOptions kModelCall{std::chrono::milliseconds(120000)};

class LiveServer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess({"--workers", "1"}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static ServerProcess* server_;
};
ServerProcess* LiveServer::server_ = nullptr;

}  // namespace

TEST_F(LiveServer, FullExperimentReachesTheModelPhaseAndAnswersAQuery) {
  Client client(server_->address(), {std::chrono::milliseconds(30000)});
  client.wait_ready();
  auto configured = client.configure(model_config(4, 3), "cpp-full");
  EXPECT_GT(configured.strategy_id, 0);
  EXPECT_EQ(client.strategy_id(), configured.strategy_id);
  ASSERT_EQ(configured.parameters.size(), 2u);
  EXPECT_EQ(configured.parameters[0].name, "c");
  EXPECT_EQ(configured.parameters[0].type, psyserve::ParameterType::kContinuous);

  Observer observer;
  int trials = 0, model_trials = 0;
  bool finished = false;
  while (!finished && trials < 40) {
    auto ask = client.ask(1, {}, kModelCall);
    const auto& trial = ask.trial();
    EXPECT_EQ(trial.state, psyserve::TrialState::kPending);
    for (const char* name : {"c", "a"}) {
      double x = trial[name].as_number();
      EXPECT_TRUE(x >= -1 && x <= 1) << name << " = " << x;
    }
    if (ask.phase_name == "opt_strat") ++model_trials;
    auto told = client.tell(trial.trial_id, observer.respond(trial), {{"rt", std::to_string(0.3 + 0.01 * trials)}});
    EXPECT_EQ(told.trial_id, trial.trial_id);
    EXPECT_EQ(told.trials_recorded, 1);
    finished = ask.is_finished || told.is_finished;
    ++trials;
  }
  EXPECT_TRUE(finished);
  EXPECT_GE(model_trials, 3);

  auto info = client.info();
  EXPECT_EQ(info.strategy_id, configured.strategy_id);
  EXPECT_EQ(info.current_strat_data_pts, trials);
  EXPECT_EQ(info.all_strat_names, (std::vector<std::string>{"init_strat", "opt_strat"}));
  EXPECT_TRUE(info.summary.is_finished);

  auto log = client.list_trials(psyserve::TrialState::kCompleted);
  ASSERT_EQ(static_cast<int>(log.size()), trials);
  EXPECT_EQ(log.front().metadata.at("rt"), "0.300000");
  ASSERT_EQ(log.front().outcomes.size(), 1u);

  psyserve::QueryRequest inverse;
  inverse.type = psyserve::QueryType::kInverse;
  inverse.probability_space = true;
  inverse.y = 0.75;
  inverse.constraints = {{"c", 0.0}};
  auto answer = client.query(inverse, kModelCall);
  ASSERT_FALSE(answer.predictions.empty());
  const auto& p = answer.predictions.front();
  EXPECT_EQ(p.x.at("c"), Value(0.0));
  EXPECT_GE(p.x.at("a").as_number(), -1.0);
  EXPECT_LE(p.x.at("a").as_number(), 1.0);
  EXPECT_TRUE(answer.probability_space);

  psyserve::QueryRequest max;
  max.probability_space = true;
  auto best = client.query(max, kModelCall);
  ASSERT_EQ(best.predictions.size(), 1u);
  EXPECT_GE(best.predictions[0].probability, 0.0);
  EXPECT_LE(best.predictions[0].probability, 1.0);

  // resume by name from a second client
  Client other(server_->address());
  EXPECT_EQ(other.resume("cpp-full").strategy_id, configured.strategy_id);
  EXPECT_EQ(other.strategy_id(), configured.strategy_id);
}

TEST_F(LiveServer, UnknownStrategyIsNotFoundWithItsField) {
  Client client(server_->address());
  try {
    client.resume(std::int64_t{987654});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_EQ(e.field(), "strategy_id");
    EXPECT_NE(e.message().find("987654"), std::string::npos) << e.message();
  }
  psyserve::AskRequest ask;
  ask.strategy_id = 987654;
  try {
    client.ask(ask);
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_EQ(e.field(), "strategy_id");
  }
  try {
    client.resume("no-such-name");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_EQ(e.field(), "name");
  }
  // a config error names the config key
  try {
    client.configure("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\n[s]\ngenerator = SobolGenerator\n");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.field().find("upper_bound"), std::string::npos) << e.what();
  }
  // nothing configured on this client yet: refused before any call
  try {
    client.ask();
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kFailedPrecondition);
    EXPECT_EQ(e.field(), "strategy_id");
  }
}

TEST_F(LiveServer, TypedValuesFixedValuesStimulusTellsAndAbandon) {
  Client client(server_->address());
  auto configured = client.configure_file(env("PSYSERVE_CONFIGS") + "/sobol_manual.ini");
  EXPECT_EQ(configured.summary.metadata.at("participant_id"), "P01");
  EXPECT_THROW(client.configure_file("/no/such/file.ini"), Error);

  auto ask = client.ask(2, {{"shape", "gabor"}, {"eye", true}});
  ASSERT_EQ(ask.trials.size(), 2u);
  for (const auto& trial : ask.trials) {
    EXPECT_TRUE(trial["contrast"].is_number());
    EXPECT_GE(trial["contrast"].as_number(), 0.001);
    EXPECT_TRUE(trial["frequency"].is_integer());
    EXPECT_GE(trial["frequency"].as_integer(), 1);
    EXPECT_LE(trial["frequency"].as_integer(), 16);
    EXPECT_EQ(trial["shape"], Value("gabor"));
    EXPECT_EQ(trial["eye"], Value(true));
  }
  // several outcomes + metadata + model_data flag, by trial id
  psyserve::TellRequest tell;
  tell.trial_id = ask.trials[0].trial_id;
  tell.outcomes = {{"", 1.0, std::nullopt}};
  tell.metadata = {{"rt", "0.512"}, {"key", "space"}};
  EXPECT_EQ(client.tell(tell).trials_recorded, 1);
  EXPECT_TRUE(client.tell(tell).duplicate);  // a retry is recognised

  // a stimulus that was never asked for
  psyserve::Stimulus stimulus{{"contrast", 0.5}, {"frequency", 4}, {"shape", "square"}, {"eye", false}};
  auto told = client.tell(stimulus, 0.0, {{"source", "pilot"}});
  EXPECT_GT(told.trial_id, ask.trials[1].trial_id);

  auto abandoned = client.abandon_trial(ask.trials[1].trial_id, true, "participant blinked");
  EXPECT_EQ(abandoned.state, psyserve::TrialState::kFailed);

  auto completed = client.list_trials(psyserve::TrialState::kCompleted);
  ASSERT_EQ(completed.size(), 2u);
  EXPECT_EQ(completed[0].metadata.at("key"), "space");
  EXPECT_EQ(completed[1].stimuli.at(0).at("shape"), Value("square"));
  EXPECT_EQ(completed[1].stimuli.at(0).at("frequency"), Value(4));
  EXPECT_EQ(client.list_trials(psyserve::TrialState::kFailed).size(), 1u);
  EXPECT_EQ(client.list_trials().size(), 3u);

  // a wrongly typed fixed value is refused by the server, naming the parameter
  try {
    client.ask(1, {{"frequency", "high"}});
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.field().find("frequency"), std::string::npos) << e.what();
  }
}

TEST_F(LiveServer, AsyncCallsLeaveTheFrameLoopRunning) {
  Client client(server_->address(), {std::chrono::milliseconds(120000)});
  client.configure(model_config(3, 3), "cpp-async");
  Observer observer;
  std::future<psyserve::AskResult> asking = client.ask_async();
  std::future<psyserve::TellResult> telling;
  psyserve::Trial current;
  long frames = 0, frames_waiting = 0, calls = 1;
  auto longest_frame = std::chrono::steady_clock::duration::zero();
  bool finished = false;
  auto give_up = std::chrono::steady_clock::now() + 300s;
  while (!finished && std::chrono::steady_clock::now() < give_up) {
    auto frame_start = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(1ms);  // "render"
    ++frames;
    if (asking.valid()) {
      if (!psyserve::ready(asking)) {
        ++frames_waiting;
      } else {
        auto ask = asking.get();
        current = ask.trial();
        psyserve::TellRequest tell;
        tell.trial_id = current.trial_id;
        tell.outcomes = {{"", observer.respond(current), std::nullopt}};
        telling = client.tell_async(tell);
        ++calls;
      }
    } else if (telling.valid()) {
      if (!psyserve::ready(telling)) {
        ++frames_waiting;
      } else {
        auto told = telling.get();
        EXPECT_EQ(told.trial_id, current.trial_id);
        finished = told.is_finished;
        if (!finished) {
          asking = client.ask_async();
          ++calls;
        }
      }
    }
    longest_frame = std::max(longest_frame, std::chrono::steady_clock::now() - frame_start);
  }
  ASSERT_TRUE(finished);
  EXPECT_EQ(client.info().current_strat_data_pts, 6);
  // The model-phase asks take tens of milliseconds on the server; the loop kept drawing meanwhile.
  EXPECT_GE(frames_waiting, 10) << "frames " << frames << ", calls " << calls;
  EXPECT_GT(frames, calls);
  std::printf("async: %ld frames, %ld of them while a call was in flight, %ld calls, longest frame %.1f ms\n", frames,
              frames_waiting, calls, std::chrono::duration<double, std::milli>(longest_frame).count());

  // an async failure arrives as the same typed Error through the future
  psyserve::AskRequest unknown;
  unknown.strategy_id = 987654;
  auto failing = client.ask_async(unknown);
  try {
    failing.get();
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kNotFound);
    EXPECT_EQ(e.field(), "strategy_id");
  }
}

TEST_F(LiveServer, ClientsComeAndGoWithCallsInFlight) {
  std::int64_t id = 0;
  {
    Client first(server_->address());
    id = first.configure("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n"
                         "[s]\ngenerator = SobolGenerator\nmin_asks = 1000\n")
             .strategy_id;
  }
  for (int i = 0; i < 20; ++i) {  // each client destroyed with a call possibly still in flight
    Client client(server_->address());
    client.resume(id);
    auto trial = client.ask_async().get().trial();
    psyserve::TellRequest tell;
    tell.trial_id = trial.trial_id;
    tell.outcomes = {{"", 1.0, std::nullopt}};
    EXPECT_EQ(client.tell_async(tell).get().trial_id, trial.trial_id);
    auto unread = client.ask_async();  // never waited for: the destructor waits
  }
  Client check(server_->address());
  check.resume(id);
  EXPECT_EQ(check.list_trials(psyserve::TrialState::kCompleted).size(), 20u);
  EXPECT_EQ(check.list_trials(psyserve::TrialState::kPending).size(), 20u);
}

TEST_F(LiveServer, DeadlineExceededIsATypedError) {
  Client client(server_->address());
  client.configure(model_config(2, 5), "cpp-deadline");
  for (double outcome : {1.0, 0.0}) client.tell(client.ask().trial().trial_id, outcome);
  try {
    client.ask(1, {}, CallOptions{std::chrono::milliseconds(1)});  // a model ask cannot be that fast
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::kDeadlineExceeded) << e.what();
  }
}

TEST(TokenAndTls, BearerTokenAndRootCertificates) {
  const std::string token = "cpp-test-token";
  {
    ServerProcess server({"--no-models", "--auth-token", token});
    Client anonymous(server.address());
    try {
      anonymous.resume(std::int64_t{1});
      FAIL() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::kUnauthenticated);
    }
    psyserve::ClientOptions options;
    options.token = token;
    Client authorised(server.address(), options);
    EXPECT_GT(authorised.configure("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n"
                                   "[s]\ngenerator = SobolGenerator\nmin_asks = 2\n")
                  .strategy_id,
              0);
    EXPECT_EQ(authorised.ask().trials.size(), 1u);
  }
  std::string cert = env("PSYSERVE_TLS_CERT"), key = env("PSYSERVE_TLS_KEY");
  if (cert.empty() || key.empty()) GTEST_SKIP() << "TLS part: set PSYSERVE_TLS_CERT and PSYSERVE_TLS_KEY (the pytest driver does)";
  ServerProcess server({"--no-models", "--auth-token", token, "--tls-cert", cert, "--tls-key", key});
  psyserve::ClientOptions options;
  options.token = token;
  options.root_certificates = read_file(cert);
  Client secure(server.address(), options);
  EXPECT_GT(secure.configure("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n"
                             "[s]\ngenerator = SobolGenerator\nmin_asks = 2\n")
                .strategy_id,
            0);
  Client plaintext(server.address(), {std::chrono::milliseconds(3000), token});
  EXPECT_THROW(plaintext.ask(psyserve::AskRequest{1, {}, "", 0, 1}), Error);
}

TEST_F(LiveServer, ExampleProgramRunsASimulatedExperiment) {
  std::string example = env("PSYSERVE_EXAMPLE");
  if (example.empty()) GTEST_SKIP() << "the example was not built";
  fs::path ini = server_->dir() / "example.ini";
  std::ofstream(ini) << model_config(4, 2);
  fs::path out = server_->dir() / "example.out";
  pid_t pid = spawn({example, "--address", server_->address(), "--config", ini.string(), "--seed", "3"}, out);
  int status = 0;
  waitpid(pid, &status, 0);
  std::string text = read_file(out);
  std::printf("example output:\n%s\n", text.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << text;
  EXPECT_NE(text.find("threshold"), std::string::npos) << text;
  EXPECT_NE(text.find("trial log"), std::string::npos) << text;
}
