// Example stimulus program: a detection threshold experiment run by psyserve.
//
//   psyserve_threshold --config threshold.ini [--address 127.0.0.1:50051] [--interactive]
//                      [--seed N] [--target 0.75] [--token T] [--name NAME]
//
// The last continuous parameter is the stimulus intensity, the first (if there are two or more)
// its context. Without --interactive a simulated observer answers: it detects the intensity when it
// is above 0.4 u^2 - 0.2 (u, the context, and the intensity scaled to [-1, 1]), with logistic noise.
// With --interactive you answer y/n at the keyboard and your response time is recorded.
// At the end the program asks the model for the threshold and prints the trial log.
#include <psyserve/client.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>

namespace {

struct Options {
  std::string address = "127.0.0.1:50051";
  std::string config;
  std::string name;
  std::string token;
  bool interactive = false;
  unsigned seed = 1;
  double target = 0.75;
};

int usage() {
  std::cerr << "usage: psyserve_threshold --config FILE.ini [--address HOST:PORT] [--interactive] [--seed N]\n"
               "                          [--target P] [--token TOKEN] [--name NAME]\n";
  return 2;
}

double to_unit(double x, const psyserve::Parameter& p) {  // [lower, upper] -> [-1, 1]
  return 2.0 * (x - p.lower_bound) / (p.upper_bound - p.lower_bound) - 1.0;
}
double from_unit(double u, const psyserve::Parameter& p) {
  return p.lower_bound + (u + 1.0) / 2.0 * (p.upper_bound - p.lower_bound);
}

// The simulated observer's threshold (in [-1, 1] units) at a context u, at probability `target`.
double true_threshold_unit(double u, double target) {
  return 0.4 * u * u - 0.2 + std::log(target / (1.0 - target)) / 8.0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (arg == "--address") opt.address = next();
    else if (arg == "--config") opt.config = next();
    else if (arg == "--name") opt.name = next();
    else if (arg == "--token") opt.token = next();
    else if (arg == "--interactive") opt.interactive = true;
    else if (arg == "--seed") opt.seed = static_cast<unsigned>(std::stoul(next()));
    else if (arg == "--target") opt.target = std::stod(next());
    else return usage();
  }
  if (opt.config.empty()) return usage();

  try {
    psyserve::ClientOptions client_options;
    client_options.token = opt.token;
    client_options.timeout = std::chrono::seconds(120);  // model-phase asks can wait for a fit
    psyserve::Client client(opt.address, client_options);
    client.wait_ready();
    auto configured = client.configure_file(opt.config, opt.name);
    for (const auto& warning : configured.warnings) std::cerr << "config warning: " << warning << "\n";

    const psyserve::Parameter* intensity = nullptr;
    const psyserve::Parameter* context = nullptr;
    for (const auto& p : configured.parameters) {
      if (p.type == psyserve::ParameterType::kContinuous) intensity = &p;
    }
    if (!intensity) {
      std::cerr << "the config needs a continuous parameter (the intensity)\n";
      return 2;
    }
    if (configured.parameters.size() > 1 && &configured.parameters.front() != intensity &&
        configured.parameters.front().type == psyserve::ParameterType::kContinuous) {
      context = &configured.parameters.front();
    }
    std::cout << "strategy " << configured.strategy_id << ": intensity '" << intensity->name << "'"
              << (context ? ", context '" + context->name + "'" : std::string()) << "\n";

    std::mt19937 random(opt.seed);
    for (int trial_number = 1; trial_number <= 1000; ++trial_number) {
      auto ask = client.ask();
      const auto& trial = ask.trial();
      double response = 0;
      double rt = 0;
      if (opt.interactive) {
        std::cout << "trial " << trial.trial_id << " (" << ask.phase_name << "):";
        for (const auto& [name, value] : trial.stimuli.front()) std::cout << " " << name << "=" << value.to_string();
        std::cout << "  seen? [y/n] " << std::flush;
        auto shown = std::chrono::steady_clock::now();
        std::string answer;
        if (!std::getline(std::cin, answer)) break;
        rt = std::chrono::duration<double>(std::chrono::steady_clock::now() - shown).count();
        response = (!answer.empty() && (answer[0] == 'y' || answer[0] == 'Y')) ? 1.0 : 0.0;
      } else {
        double u = context ? to_unit(trial[context->name].as_number(), *context) : 0.0;
        double v = to_unit(trial[intensity->name].as_number(), *intensity);
        double p = 1.0 / (1.0 + std::exp(-8.0 * (v - (0.4 * u * u - 0.2))));
        response = std::uniform_real_distribution<double>(0, 1)(random) < p ? 1.0 : 0.0;
        rt = 0.3 + 0.4 * std::uniform_real_distribution<double>(0, 1)(random);
      }
      char rt_text[32];
      std::snprintf(rt_text, sizeof rt_text, "%.3f", rt);
      auto told = client.tell(trial.trial_id, response, {{"rt", rt_text}});
      if (ask.is_finished || told.is_finished) break;
    }

    std::cout << "\nthreshold (" << intensity->name << " at p = " << opt.target << ")\n";
    const int points = context ? 5 : 1;
    for (int i = 0; i < points; ++i) {
      psyserve::QueryRequest query;
      query.type = psyserve::QueryType::kInverse;
      query.probability_space = true;
      query.y = opt.target;
      double u = points > 1 ? -1.0 + 2.0 * i / (points - 1) : 0.0;
      if (context) query.constraints[context->name] = from_unit(u, *context);
      auto answer = client.query(query);
      if (answer.predictions.empty()) continue;
      const auto& p = answer.predictions.front();
      if (context) std::printf("  %s = %+.3f: ", context->name.c_str(), from_unit(u, *context));
      std::printf("%s = %+.3f (p = %.3f)", intensity->name.c_str(), p.x.at(intensity->name).as_number(), p.probability);
      if (!opt.interactive) std::printf("   simulated observer's: %+.3f", from_unit(true_threshold_unit(u, opt.target), *intensity));
      std::printf("\n");
    }

    std::cout << "\ntrial log\n  id  phase       outcome  rt      stimulus\n";
    for (const auto& trial : client.list_trials()) {
      std::printf("%4lld  %-10s  %7s  %-6s ", static_cast<long long>(trial.trial_id), trial.phase_name.c_str(),
                  trial.outcomes.empty() ? "-" : std::to_string(static_cast<int>(trial.outcomes[0].value)).c_str(),
                  trial.metadata.count("rt") ? trial.metadata.at("rt").c_str() : "-");
      for (const auto& [name, value] : trial.stimuli.front()) std::printf(" %s=%s", name.c_str(), value.to_string().c_str());
      std::printf("\n");
    }
    return 0;
  } catch (const psyserve::Error& e) {
    std::cerr << "psyserve: " << e.what() << "\n";
    return 1;
  }
}
