// C++ client benchmark: Sobol ask+tell pairs (blocking), and what the *_async forms cost the
// calling thread. Prints one JSON object. Driven by run.py, which starts the server.
//   cpp_client_bench HOST:PORT PAIRS
#include <psyserve/client.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using Clock = std::chrono::steady_clock;

static double micros(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

static double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * (v.size() - 1))];
}

static const char* kConfig =
    "[common]\nparnames = [x, y]\noutcome_types = [binary]\nstrategy_names = [sobol]\n"
    "[x]\nlower_bound = 0\nupper_bound = 1\n[y]\nlower_bound = 0\nupper_bound = 1\n"
    "[sobol]\ngenerator = SobolGenerator\nmin_asks = 1000000\n";

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: cpp_client_bench HOST:PORT PAIRS\n");
    return 2;
  }
  const int pairs = std::max(1, std::stoi(argv[2]));
  try {
    psyserve::Client client(argv[1], {std::chrono::milliseconds(30000)});
    client.wait_ready();
    client.configure(kConfig);
    for (int i = 0; i < 50; ++i) client.tell(client.ask().trial().trial_id, i % 2);  // warm up

    auto t0 = Clock::now();
    for (int i = 0; i < pairs; ++i) client.tell(client.ask().trial().trial_id, i % 2);
    double pair_us = micros(Clock::now() - t0) / pairs;

    // async: time spent inside ask_async()/tell_async() on the calling thread, then the wait
    std::vector<double> start_us, round_us;
    for (int i = 0; i < pairs; ++i) {
      auto s = Clock::now();
      auto asking = client.ask_async();
      start_us.push_back(micros(Clock::now() - s));
      auto trial = asking.get().trial();
      psyserve::TellRequest tell;
      tell.trial_id = trial.trial_id;
      tell.outcomes = {{"", static_cast<double>(i % 2), std::nullopt}};
      s = Clock::now();
      auto telling = client.tell_async(tell);
      start_us.push_back(micros(Clock::now() - s));
      telling.get();
      round_us.push_back(micros(Clock::now() - s));
    }
    double mean = 0;
    for (double x : start_us) mean += x;
    mean /= start_us.size();
    std::printf(
        "{\"pairs\": %d, \"pair_us\": %.1f, \"async_call_us_mean\": %.2f, \"async_call_us_p50\": %.2f, "
        "\"async_call_us_p99\": %.2f, \"async_tell_round_trip_us_p50\": %.1f}\n",
        pairs, pair_us, mean, percentile(start_us, 0.5), percentile(start_us, 0.99), percentile(round_us, 0.5));
    return 0;
  } catch (const psyserve::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}
