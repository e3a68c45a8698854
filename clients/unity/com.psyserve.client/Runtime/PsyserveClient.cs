// The C# client of psyserve's HTTP endpoint (Connect protocol, unary, proto3 JSON): a Task-based API
// mirroring the Python client (configure, resume, ask, tell, query, ...), with the current strategy
// kept client-side like aepsych_client. Owns request building, headers (token, timeout) and reply /
// error decoding; moving bytes is the ITransport's job.
using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text;
using System.Threading;
using System.Threading.Tasks;

namespace Psyserve.Client
{
    /// <summary>
    /// psyserve client over HTTP (Connect protocol, JSON). <c>new PsyserveClient("http://127.0.0.1:8080")</c>
    /// for the HttpClient transport, or pass any <see cref="ITransport"/> (UnityWebRequestTransport in Unity).
    /// Every call throws a <see cref="PsyserveException"/> subclass on failure, with <c>Field</c> naming
    /// the request field or config key at fault. Call methods from one thread at a time when relying on
    /// the current strategy (<see cref="StrategyId"/>); calls that pass strategyId may run concurrently.
    /// </summary>
    public sealed class PsyserveClient : IDisposable
    {
        readonly ITransport transport;
        readonly string token;

        /// <summary>Per-call limit (default 60 s), sent to the server as Connect-Timeout-Ms too.</summary>
        public TimeSpan Timeout;

        /// <summary>The current strategy: set by Configure and Resume, used when a call passes no strategyId.</summary>
        public long? StrategyId;

        /// <summary>Ids of the strategies this client configured, in order.</summary>
        public readonly List<long> Configs = new List<long>();

        /// <summary>Strategy ids by the name given to Configure.</summary>
        public readonly Dictionary<string, long> ConfigNames = new Dictionary<string, long>();

        /// <param name="baseUrl">the server's HTTP endpoint, e.g. "http://127.0.0.1:8080" (psyserve serve --http-port 8080)</param>
        /// <param name="token">sent as "Authorization: Bearer token" (servers started with --auth-token)</param>
        /// <param name="timeout">per call; default 60 s</param>
        public PsyserveClient(string baseUrl, string token = null, TimeSpan? timeout = null)
            : this(new HttpClientTransport(baseUrl), token, timeout) { }

        public PsyserveClient(ITransport transport, string token = null, TimeSpan? timeout = null)
        {
            if (transport == null) throw new ArgumentNullException("transport");
            this.transport = transport;
            this.token = string.IsNullOrEmpty(token) ? null : token;
            Timeout = timeout ?? TimeSpan.FromSeconds(60);
        }

        public void Dispose() { transport.Dispose(); }

        // ------------------------------------------------------------------ the generic call

        /// <summary>
        /// One unary RPC by method name (e.g. "Ask"): the request as proto3 JSON, the reply parsed with
        /// <paramref name="parse"/> (a generated FromJson). The transport is entered before the first
        /// await, so UnityWebRequest calls start on the caller's (main) thread.
        /// </summary>
        public Task<TResponse> CallAsync<TResponse>(string method, IMessage request, Func<object, TResponse> parse,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var body = Encoding.UTF8.GetBytes(Json.Serialize(request));
            var req = new TransportRequest
            {
                Path = ExperimentServiceMethods.ServiceName + "/" + method,
                Body = body,
                ContentType = "application/json",
                Timeout = Timeout,
            };
            req.Headers["Connect-Protocol-Version"] = "1";
            if (Timeout > TimeSpan.Zero)
                req.Headers["Connect-Timeout-Ms"] = ((long)Math.Ceiling(Timeout.TotalMilliseconds)).ToString(CultureInfo.InvariantCulture);
            if (token != null) req.Headers["Authorization"] = "Bearer " + token;
            return Finish(transport.SendAsync(req, cancellationToken), method, parse);
        }

        static async Task<TResponse> Finish<TResponse>(Task<TransportResponse> sending, string method, Func<object, TResponse> parse)
        {
            var reply = await sending.ConfigureAwait(false);
            var text = reply.Body == null ? "" : Encoding.UTF8.GetString(reply.Body);
            if (reply.StatusCode != 200)
                throw PsyserveException.FromConnect(reply.StatusCode, text);
            if (reply.ContentType != null && reply.ContentType.Length > 0 && !reply.ContentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase))
                throw new UnknownException(method + ": expected an application/json reply, got " + reply.ContentType);
            try
            {
                return parse(Json.Parse(text));
            }
            catch (JsonException e)
            {
                throw new InternalException(method + ": cannot decode the reply: " + e.Message, null, e);
            }
        }

        long Sid(long? strategyId)
        {
            var sid = strategyId ?? StrategyId;
            if (sid == null) throw new InvalidOperationException("no strategy: call ConfigureAsync or ResumeAsync first, or pass strategyId");
            return sid.Value;
        }

        // ------------------------------------------------------------------ the API

        /// <summary>Creates a strategy from an AEPsych-style INI config; it becomes the current strategy.</summary>
        public async Task<ConfigureResponse> ConfigureAsync(string configIni, string name = null,
            IDictionary<string, string> metadata = null, string requestId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = new ConfigureRequest { ConfigIni = configIni ?? "", Name = name ?? "", RequestId = requestId ?? "" };
            if (metadata != null) foreach (var kv in metadata) request.Metadata[kv.Key] = kv.Value;
            var reply = await CallAsync(ExperimentServiceMethods.Configure, request, ConfigureResponse.FromJson, cancellationToken).ConfigureAwait(false);
            Configs.Add(reply.StrategyId);
            if (!string.IsNullOrEmpty(name)) ConfigNames[name] = reply.StrategyId;
            StrategyId = reply.StrategyId;
            return reply;
        }

        /// <summary>ConfigureAsync with the INI read from a file (not on WebGL: use a TextAsset's text there).</summary>
        public Task<ConfigureResponse> ConfigureFromFileAsync(string path, string name = null,
            IDictionary<string, string> metadata = null, string requestId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            return ConfigureAsync(File.ReadAllText(path, Encoding.UTF8), name, metadata, requestId, cancellationToken);
        }

        /// <summary>Makes a strategy the current one, by id.</summary>
        public Task<StrategySummary> ResumeAsync(long strategyId, CancellationToken cancellationToken = default(CancellationToken))
        {
            return Resume(new ResumeRequest { StrategyId = strategyId }, cancellationToken);
        }

        /// <summary>Makes a strategy the current one, by the name it was configured with.</summary>
        public Task<StrategySummary> ResumeAsync(string name, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (name == null) throw new ArgumentNullException("name");
            return Resume(new ResumeRequest { Name = name }, cancellationToken);
        }

        async Task<StrategySummary> Resume(ResumeRequest request, CancellationToken cancellationToken)
        {
            var reply = await CallAsync(ExperimentServiceMethods.Resume, request, ResumeResponse.FromJson, cancellationToken).ConfigureAwait(false);
            if (reply.Summary != null) StrategyId = reply.Summary.StrategyId;
            return reply.Summary;
        }

        /// <summary>The next trial(s) to run, each with a trial id (Trials[i].TrialId).</summary>
        /// <param name="fixedParameters">parameters held at given values, by name</param>
        /// <param name="ttlSeconds">optional lease: a trial not told within this time is abandoned</param>
        public Task<AskResponse> AskAsync(int numPoints = 1, IDictionary<string, ParameterValue> fixedParameters = null,
            long? strategyId = null, string requestId = null, double ttlSeconds = 0, CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = new AskRequest { StrategyId = Sid(strategyId), NumPoints = numPoints, RequestId = requestId ?? "", TtlSeconds = ttlSeconds };
            if (fixedParameters != null) foreach (var kv in fixedParameters) request.FixedParameters[kv.Key] = kv.Value;
            return CallAsync(ExperimentServiceMethods.Ask, request, AskResponse.FromJson, cancellationToken);
        }

        /// <summary>Records the outcome of an asked trial (retrying with the same trial id is safe).</summary>
        /// <param name="metadata">free per-trial metadata, e.g. {"rt": "0.42"}</param>
        public Task<TellResponse> TellAsync(long trialId, double outcome, IDictionary<string, string> metadata = null,
            bool modelData = true, double? sem = null, long? strategyId = null, string requestId = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = NewTell(outcome, metadata, modelData, sem, strategyId, requestId);
            request.TrialId = trialId;
            return TellAsync(request, cancellationToken);
        }

        /// <summary>Records an outcome for a stimulus that was not asked for (or, for pairwise, both stimuli).</summary>
        public Task<TellResponse> TellAsync(IList<Stimulus> stimuli, double outcome, IDictionary<string, string> metadata = null,
            bool modelData = true, double? sem = null, long? strategyId = null, string requestId = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            if (stimuli == null || stimuli.Count == 0) throw new ArgumentException("give one stimulus (two for pairwise)", "stimuli");
            var request = NewTell(outcome, metadata, modelData, sem, strategyId, requestId);
            request.Stimuli = new StimulusList();
            request.Stimuli.Stimuli.AddRange(stimuli);
            return TellAsync(request, cancellationToken);
        }

        /// <summary>Records an outcome for one stimulus given by parameter values.</summary>
        public Task<TellResponse> TellAsync(Stimulus stimulus, double outcome, IDictionary<string, string> metadata = null,
            bool modelData = true, double? sem = null, long? strategyId = null, string requestId = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            return TellAsync(new List<Stimulus> { stimulus }, outcome, metadata, modelData, sem, strategyId, requestId, cancellationToken);
        }

        /// <summary>Tell with a full request (several named outcomes, ...); StrategyId 0 means the current strategy.</summary>
        public Task<TellResponse> TellAsync(TellRequest request, CancellationToken cancellationToken = default(CancellationToken))
        {
            if (request.StrategyId == 0) request.StrategyId = Sid(null);
            return CallAsync(ExperimentServiceMethods.Tell, request, TellResponse.FromJson, cancellationToken);
        }

        TellRequest NewTell(double outcome, IDictionary<string, string> metadata, bool modelData, double? sem, long? strategyId, string requestId)
        {
            var request = new TellRequest { StrategyId = Sid(strategyId), ModelData = modelData, RequestId = requestId ?? "" };
            request.Outcomes.Add(new Outcome { Value = outcome, Sem = sem });
            if (metadata != null) foreach (var kv in metadata) request.Metadata[kv.Key] = kv.Value;
            return request;
        }

        /// <summary>Asks the model: max, min, prediction (at <paramref name="x"/>) or inverse (of <paramref name="y"/>);
        /// with several outcomes, <paramref name="outcome"/>'s model (empty: the first). Ordinal models answer each
        /// prediction's <c>LevelProbabilities</c>.</summary>
        public Task<QueryResponse> QueryAsync(QueryType queryType = QueryType.Max, bool probabilitySpace = false,
            IList<Stimulus> x = null, double? y = null, IDictionary<string, ParameterValue> constraints = null,
            long? strategyId = null, CancellationToken cancellationToken = default(CancellationToken), string outcome = "")
        {
            var request = new QueryRequest { StrategyId = Sid(strategyId), QueryType = queryType, ProbabilitySpace = probabilitySpace, Y = y, Outcome = outcome ?? "" };
            if (x != null) request.X.AddRange(x);
            if (constraints != null) foreach (var kv in constraints) request.Constraints[kv.Key] = kv.Value;
            return CallAsync(ExperimentServiceMethods.Query, request, QueryResponse.FromJson, cancellationToken);
        }

        /// <summary>AEPsych-style summary of the strategy.</summary>
        public Task<InfoResponse> InfoAsync(long? strategyId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            return CallAsync(ExperimentServiceMethods.Info, new InfoRequest { StrategyId = Sid(strategyId) }, InfoResponse.FromJson, cancellationToken);
        }

        /// <summary>The strategy's parameters by name.</summary>
        public async Task<Dictionary<string, Parameter>> ParametersAsync(long? strategyId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            var reply = await CallAsync(ExperimentServiceMethods.Parameters, new ParametersRequest { StrategyId = Sid(strategyId) },
                ParametersResponse.FromJson, cancellationToken).ConfigureAwait(false);
            var result = new Dictionary<string, Parameter>();
            foreach (var p in reply.Parameters) result[p.Name] = p;
            return result;
        }

        /// <summary>The strategy's config: {section: {key: value}}, whole or one section/property.</summary>
        public async Task<Dictionary<string, Dictionary<string, string>>> GetConfigAsync(string section = null, string property = null,
            long? strategyId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = new GetConfigRequest { StrategyId = Sid(strategyId), Section = section ?? "", Property = property ?? "" };
            var reply = await CallAsync(ExperimentServiceMethods.GetConfig, request, GetConfigResponse.FromJson, cancellationToken).ConfigureAwait(false);
            var result = new Dictionary<string, Dictionary<string, string>>();
            foreach (var kv in reply.Sections) result[kv.Key] = kv.Value == null ? new Dictionary<string, string>() : kv.Value.Values;
            return result;
        }

        /// <summary>Ends the strategy's current phase.</summary>
        public Task<FinishStrategyResponse> FinishStrategyAsync(long? strategyId = null, CancellationToken cancellationToken = default(CancellationToken))
        {
            return CallAsync(ExperimentServiceMethods.FinishStrategy, new FinishStrategyRequest { StrategyId = Sid(strategyId) },
                FinishStrategyResponse.FromJson, cancellationToken);
        }

        /// <summary>Every strategy on the server.</summary>
        public async Task<List<StrategySummary>> ListStrategiesAsync(CancellationToken cancellationToken = default(CancellationToken))
        {
            var reply = await CallAsync(ExperimentServiceMethods.ListStrategies, new ListStrategiesRequest(), ListStrategiesResponse.FromJson,
                cancellationToken).ConfigureAwait(false);
            return reply.Strategies;
        }

        /// <summary>The strategy's trials, optionally only those in one state.</summary>
        public async Task<List<Trial>> ListTrialsAsync(TrialState state = TrialState.Unspecified, long? strategyId = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var reply = await CallAsync(ExperimentServiceMethods.ListTrials, new ListTrialsRequest { StrategyId = Sid(strategyId), State = state },
                ListTrialsResponse.FromJson, cancellationToken).ConfigureAwait(false);
            return reply.Trials;
        }

        /// <summary>Marks a pending trial abandoned (or failed: it ran and gave no usable outcome).</summary>
        public async Task<Trial> AbandonTrialAsync(long trialId, bool failed = false, string reason = null, long? strategyId = null,
            CancellationToken cancellationToken = default(CancellationToken))
        {
            var request = new AbandonTrialRequest { StrategyId = Sid(strategyId), TrialId = trialId, Failed = failed, Reason = reason ?? "" };
            var reply = await CallAsync(ExperimentServiceMethods.AbandonTrial, request, AbandonTrialResponse.FromJson, cancellationToken).ConfigureAwait(false);
            return reply.Trial;
        }
    }

    // ---------------------------------------------------------------------- conveniences on generated types

    public sealed partial class ParameterValue
    {
        public static implicit operator ParameterValue(double value) { return new ParameterValue { Number = value }; }
        public static implicit operator ParameterValue(long value) { return new ParameterValue { Integer = value }; }
        public static implicit operator ParameterValue(int value) { return new ParameterValue { Integer = value }; }
        public static implicit operator ParameterValue(string value) { return new ParameterValue { Category = value }; }
        public static implicit operator ParameterValue(bool value) { return new ParameterValue { Flag = value }; }

        /// <summary>The value as double (number), long (integer), string (category) or bool (flag); null when unset.</summary>
        public object Value
        {
            get
            {
                if (Number.HasValue) return Number.Value;
                if (Integer.HasValue) return Integer.Value;
                if (Category != null) return Category;
                if (Flag.HasValue) return Flag.Value;
                return null;
            }
        }

        /// <summary>A numeric value as double (integer and binary parameters too).</summary>
        public double AsDouble()
        {
            if (Number.HasValue) return Number.Value;
            if (Integer.HasValue) return Integer.Value;
            if (Flag.HasValue) return Flag.Value ? 1 : 0;
            throw new InvalidOperationException("not a numeric parameter value: " + this);
        }
    }

    public sealed partial class Stimulus
    {
        /// <summary>Adds one parameter value; returns this stimulus, for chaining.</summary>
        public Stimulus With(string name, ParameterValue value)
        {
            Values[name] = value;
            return this;
        }

        /// <summary>A numeric parameter's value as double.</summary>
        public double this[string name]
        {
            get
            {
                ParameterValue v;
                if (!Values.TryGetValue(name, out v)) throw new KeyNotFoundException("no parameter '" + name + "' in this stimulus");
                return v.AsDouble();
            }
        }
    }

    public sealed partial class Trial
    {
        /// <summary>The trial's (first) stimulus.</summary>
        public Stimulus Stimulus { get { return Stimuli.Count > 0 ? Stimuli[0] : null; } }
    }
}
