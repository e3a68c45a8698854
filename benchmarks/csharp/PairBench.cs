// The C# client's Sobol ask+tell pair latency, for benchmarks/csharp_client.py and
// `benchmarks/http_rpc.py --csharp PairBench.exe`: `mono PairBench.exe BASE_URL PAIRS` with the INI
// config on stdin; configures its own strategy, runs 50 warm-up pairs (JIT, connection), times PAIRS
// pairs and prints one JSON line {"pair_s": seconds per pair, "pairs": PAIRS}.
using System;
using System.Diagnostics;
using System.Globalization;
using System.Threading.Tasks;
using Psyserve.Client;

static class PairBench
{
    static int Main(string[] args)
    {
        if (args.Length != 2)
        {
            Console.Error.WriteLine("usage: mono PairBench.exe BASE_URL PAIRS  (INI config on stdin)");
            return 2;
        }
        var config = Console.In.ReadToEnd();
        Run(args[0], int.Parse(args[1], CultureInfo.InvariantCulture), config).GetAwaiter().GetResult();
        return 0;
    }

    static async Task Run(string url, int pairs, string config)
    {
        using (var client = new PsyserveClient(url))
        {
            await client.ConfigureAsync(config);
            for (int i = 0; i < 50; i++) await Pair(client);
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < pairs; i++) await Pair(client);
            sw.Stop();
            Console.WriteLine(new JsonWriter().BeginObject().Name("pair_s").Double(sw.Elapsed.TotalSeconds / pairs)
                .Name("pairs").Int32(pairs).EndObject());
        }
    }

    static async Task Pair(PsyserveClient client)
    {
        var trial = (await client.AskAsync()).Trials[0];
        await client.TellAsync(trial.TrialId, 1);
    }
}
