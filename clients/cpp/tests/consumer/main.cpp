// A user's program: configure a Sobol strategy, run two trials, print "trials completed: N".
#include <psyserve/client.h>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: consumer HOST:PORT\n";
    return 2;
  }
  try {
    psyserve::Client client(argv[1]);
    client.configure("[common]\nparnames = [x]\nstrategy_names = [s]\n[x]\nlower_bound = 0\nupper_bound = 1\n"
                     "[s]\ngenerator = SobolGenerator\nmin_asks = 2\n");
    psyserve::TellResult told;
    for (int i = 0; i < 2; ++i) {
      auto trial = client.ask().trial();
      told = client.tell(trial.trial_id, trial["x"].as_number() > 0.5 ? 1.0 : 0.0);
    }
    std::cout << "trials completed: " << told.trials_completed << "\n";
    return 0;
  } catch (const psyserve::Error& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
}
