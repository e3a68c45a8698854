// Console test program for the C# client (tests/test_csharp_client.py runs it with mono against a real
// psyserve's HTTP endpoint). Each mode checks what it can itself (a failed check exits non-zero with
// the reason) and prints one JSON object of observations for the Python test to assert on.
//   experiment URL TOKEN INI_PATH  token checks, configure, ask/tell into the model phase, errors, tell by stimulus, abandon
//   resume URL TOKEN STRATEGY_ID   after a restart: resume by id, more model trials, query, finish
//   transport SILENT_URL CLOSED_URL  timeout and unreachable server -> their exceptions, promptly
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Threading.Tasks;
using Psyserve.Client;

static class ClientTest
{
    static int Main(string[] args)
    {
        try
        {
            var output = new JsonWriter();
            switch (args[0])
            {
                case "experiment": Experiment(args[1], args[2], args[3], output).GetAwaiter().GetResult(); break;
                case "resume": Resume(args[1], args[2], long.Parse(args[3]), output).GetAwaiter().GetResult(); break;
                case "transport": Transport(args[1], args[2], output).GetAwaiter().GetResult(); break;
                default: throw new ArgumentException("unknown mode " + args[0]);
            }
            Console.WriteLine(output.ToString());
            return 0;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine("FAILED: " + e);
            return 1;
        }
    }

    static void Check(bool ok, string what)
    {
        if (!ok) throw new Exception("check failed: " + what);
    }

    /// <summary>Runs call, which must throw TException; returns it.</summary>
    static async Task<TException> Expect<TException>(Func<Task> call) where TException : PsyserveException
    {
        try
        {
            await call();
        }
        catch (TException e)
        {
            return e;
        }
        catch (Exception e)
        {
            throw new Exception("expected " + typeof(TException).Name + ", got " + e, e);
        }
        throw new Exception("expected " + typeof(TException).Name + ", the call succeeded");
    }

    static void WriteError(JsonWriter w, string name, PsyserveException e)
    {
        w.Name(name).BeginObject().Name("type").String(e.GetType().Name).Name("code").String(e.Code)
            .Name("field").String(e.Field).Name("message").String(e.Message).EndObject();
    }

    /// <summary>A simulated observer: sees the stimulus when a &gt; 0.5 c, with 10% lapses.</summary>
    static double Respond(Trial trial, Random rng)
    {
        bool seen = trial.Stimulus["a"] > 0.5 * trial.Stimulus["c"];
        return (rng.NextDouble() < 0.1 ? !seen : seen) ? 1 : 0;
    }

    static async Task Experiment(string url, string token, string iniPath, JsonWriter w)
    {
        w.BeginObject();
        // token: missing and wrong are both refused
        using (var anonymous = new PsyserveClient(url))
            WriteError(w, "no_token", await Expect<UnauthenticatedException>(() => anonymous.ListStrategiesAsync()));
        using (var wrong = new PsyserveClient(url, "not-the-token"))
            WriteError(w, "wrong_token", await Expect<UnauthenticatedException>(() => wrong.ListStrategiesAsync()));

        using (var client = new PsyserveClient(url, token, TimeSpan.FromSeconds(60)))
        {
            var configure = await client.ConfigureFromFileAsync(iniPath, "csharp-P01", new Dictionary<string, string> { { "participant", "P01" } });
            Check(client.StrategyId == configure.StrategyId, "configure sets the current strategy");
            w.Name("strategy_id").Int64(configure.StrategyId);
            var parameters = await client.ParametersAsync();
            w.Name("parameters").BeginArray();
            foreach (var p in configure.Parameters) w.String(p.Name + ":" + p.Type + ":" + p.LowerBound + ":" + p.UpperBound);
            w.EndArray();
            Check(parameters.Count == 2 && parameters["c"].Type == ParameterType.Continuous, "parameters by name");

            // ask/tell: the Sobol phase, then into the model phase
            var rng = new Random(3);
            w.Name("trials").BeginArray();
            for (int i = 0; i < 13; i++)
            {
                var ask = await client.AskAsync();
                Check(ask.Trials.Count == 1, "one trial per ask");
                var trial = ask.Trials[0];
                var c = trial.Stimulus["c"];
                Check(c >= -1 && c <= 1, "c within its bounds");
                var tell = await client.TellAsync(trial.TrialId, Respond(trial, rng), new Dictionary<string, string> { { "rt", "0.42" } });
                Check(tell.TrialId == trial.TrialId && tell.TrialsRecorded == 1, "tell records the asked trial");
                var again = await client.TellAsync(trial.TrialId, Respond(trial, rng));
                Check(again.Duplicate && again.TrialsRecorded == 0, "a retried tell is a duplicate");
                w.BeginObject().Name("id").Int64(trial.TrialId).Name("phase").String(ask.PhaseName)
                    .Name("precomputed").Bool(ask.Precomputed).Name("c").Double(c).Name("a").Double(trial.Stimulus["a"]).EndObject();
            }
            w.EndArray();

            // errors map to their exception class, with the offending field
            WriteError(w, "bad_outcome", await Expect<InvalidArgumentException>(async () =>
            {
                var t = (await client.AskAsync()).Trials[0];
                try { await client.TellAsync(t.TrialId, 0.5); }
                finally { await client.AbandonTrialAsync(t.TrialId, reason: "test"); }
            }));
            WriteError(w, "bad_config", await Expect<InvalidArgumentException>(() => client.ConfigureAsync(
                "[common]\nparnames = [a]\nstrategy_names = [s]\n[a]\nlower_bound = 0\nupper_bound = 1\n[s]\ngenerator = SobolGenerator\nmin_asks = lots")));
            Check(client.StrategyId == configure.StrategyId, "a failed configure leaves the current strategy");
            WriteError(w, "unknown_strategy", await Expect<NotFoundException>(() => client.AskAsync(strategyId: 12345)));
            WriteError(w, "unknown_name", await Expect<NotFoundException>(() => client.ResumeAsync("nobody")));
            WriteError(w, "bad_stimulus", await Expect<InvalidArgumentException>(() =>
                client.TellAsync(new Stimulus().With("c", 0.1).With("a", 7.0), 1)));

            // tell by stimulus; abandon a trial
            var byStimulus = await client.TellAsync(new Stimulus().With("c", 0.1).With("a", 0.2), 1,
                new Dictionary<string, string> { { "source", "manual" } });
            Check(byStimulus.TrialsRecorded == 1, "tell by stimulus records a trial");
            var pending = (await client.AskAsync(ttlSeconds: 600)).Trials[0];
            var abandoned = await client.AbandonTrialAsync(pending.TrialId, failed: true, reason: "headset removed");
            Check(abandoned.State == TrialState.Failed, "abandon(failed) marks the trial failed");

            var completed = await client.ListTrialsAsync(TrialState.Completed);
            var all = await client.ListTrialsAsync();
            var info = await client.InfoAsync();
            var config = await client.GetConfigAsync("opt_strat");
            var strategies = await client.ListStrategiesAsync();
            w.Name("completed").Int32(completed.Count).Name("all").Int32(all.Count)
                .Name("rt_metadata").String(completed[0].Metadata.ContainsKey("rt") ? completed[0].Metadata["rt"] : "")
                .Name("info_data_points").Int64(info.CurrentStratDataPts).Name("info_model").String(info.CurrentStratModel)
                .Name("info_phase").String(info.CurrentStratName)
                .Name("config_model").String(config["opt_strat"]["model"])
                .Name("summary_name").String(info.Summary.Name).Name("participant").String(info.Summary.Metadata["participant"])
                .Name("strategies").Int32(strategies.Count);
        }
        w.EndObject();
    }

    static async Task Resume(string url, string token, long strategyId, JsonWriter w)
    {
        w.BeginObject();
        using (var client = new PsyserveClient(url, token))
        {
            var summary = await client.ResumeAsync(strategyId);
            Check(client.StrategyId == strategyId, "resume sets the current strategy");
            w.Name("resumed_completed").Int64(summary.TrialsCompleted).Name("resumed_name").String(summary.Name)
                .Name("resumed_phase").Int32(summary.CurrentPhaseIndex);
            var byName = await client.ResumeAsync("csharp-P01");
            Check(byName.StrategyId == strategyId, "resume by name finds the same strategy");
            var rng = new Random(4);
            w.Name("trials").BeginArray();
            for (int i = 0; i < 3; i++)
            {
                var ask = await client.AskAsync();
                var trial = ask.Trials[0];
                await client.TellAsync(trial.TrialId, Respond(trial, rng));
                w.BeginObject().Name("id").Int64(trial.TrialId).Name("phase").String(ask.PhaseName).EndObject();
            }
            w.EndArray();
            var max = await client.QueryAsync(QueryType.Max, probabilitySpace: true);
            var inverse = await client.QueryAsync(QueryType.Inverse, probabilitySpace: true, y: 0.75,
                constraints: new Dictionary<string, ParameterValue> { { "c", 0.0 } });
            var prediction = await client.QueryAsync(QueryType.Prediction, probabilitySpace: true,
                x: new List<Stimulus> { new Stimulus().With("c", 0.0).With("a", -0.9), new Stimulus().With("c", 0.0).With("a", 0.9) });
            w.Name("max_probability").Double(max.Predictions[0].Probability)
                .Name("inverse_a").Double(inverse.Predictions[0].X["a"]).Name("inverse_c").Double(inverse.Predictions[0].X["c"])
                .Name("predict_low").Double(prediction.Predictions[0].Probability)
                .Name("predict_high").Double(prediction.Predictions[1].Probability);
            var finish = await client.FinishStrategyAsync();
            w.Name("finished_strategy").String(finish.FinishedStrategy);
        }
        w.EndObject();
    }

    static async Task Transport(string silentUrl, string closedUrl, JsonWriter w)
    {
        w.BeginObject();
        using (var silent = new PsyserveClient(silentUrl, "t", TimeSpan.FromMilliseconds(500)))
        {
            var sw = Stopwatch.StartNew();
            WriteError(w, "silent", await Expect<DeadlineExceededException>(() => silent.ListStrategiesAsync()));
            w.Name("silent_seconds").Double(sw.Elapsed.TotalSeconds);
            var cts = new System.Threading.CancellationTokenSource(200);
            silent.Timeout = TimeSpan.FromSeconds(30);
            sw.Restart();
            WriteError(w, "canceled", await Expect<CanceledException>(() => silent.ListStrategiesAsync(cts.Token)));
            w.Name("canceled_seconds").Double(sw.Elapsed.TotalSeconds);
        }
        using (var closed = new PsyserveClient(closedUrl, null, TimeSpan.FromSeconds(5)))
            WriteError(w, "closed", await Expect<UnavailableException>(() => closed.ListStrategiesAsync()));
        var noStrategy = new PsyserveClient(closedUrl);
        try
        {
            await noStrategy.AskAsync();
            throw new Exception("AskAsync without a strategy must throw");
        }
        catch (InvalidOperationException e)
        {
            w.Name("no_strategy").String(e.Message);
        }
        w.EndObject();
    }
}
