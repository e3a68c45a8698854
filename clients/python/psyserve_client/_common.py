"""Request building, reply parsing, result types and errors shared by Client and AsyncClient.

Everything protocol-specific lives here once; the two clients only differ in how they call a stub.
Value and enum conversion is not here: it lives in the public `psyserve_client.wire`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from ._proto.psyserve.v1 import messages_pb2 as pb
from .wire import (
    PARAMETER_TYPE_NAMES,
    QUERY_TYPE_ENUMS,
    QUERY_TYPE_NAMES,
    SWEEP_BEST_MODE_ENUMS,
    SWEEP_ORDER_ENUMS,
    SWEEP_ORDER_NAMES,
    TRIAL_STATE_ENUMS,
    TRIAL_STATE_NAMES,
    Value,
    from_stimulus,
    require_value,
    to_stimulus,
    to_values,
)

T = TypeVar("T")

# ---------------------------------------------------------------------------- errors


class PsyserveError(Exception):
    """An RPC failed. `code` is the gRPC status, `field` the request field or config key at fault."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.field = field


class InvalidArgumentError(PsyserveError):
    pass


class NotFoundError(PsyserveError):
    pass


class AlreadyExistsError(PsyserveError):
    pass


class FailedPreconditionError(PsyserveError):
    pass


class UnavailableError(PsyserveError):
    pass


class DeadlineExceededError(PsyserveError):
    pass


class UnauthenticatedError(PsyserveError):
    pass


class ResourceExhaustedError(PsyserveError):
    pass


_ERRORS: dict[grpc.StatusCode, type[PsyserveError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
}


def translate_error(error: grpc.RpcError) -> PsyserveError:
    """grpc.RpcError (sync or aio) -> the PsyserveError subclass for its status code."""
    code = error.code() if callable(getattr(error, "code", None)) else grpc.StatusCode.UNKNOWN
    message = error.details() if callable(getattr(error, "details", None)) else str(error)
    field_name = None
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except Exception:
        status = None
    if status is None and callable(getattr(error, "trailing_metadata", None)):
        for key, value in error.trailing_metadata() or ():
            if key == "grpc-status-details-bin":
                from google.rpc import status_pb2

                status = status_pb2.Status.FromString(value)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                if bad.field_violations:
                    field_name = bad.field_violations[0].field
    return _ERRORS.get(code, PsyserveError)(code, message or "", field_name)


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    lower_bound: float
    upper_bound: float
    log_scale: bool = False
    choices: tuple[str, ...] = ()
    value: Value | None = None
    values: tuple[Value, ...] = ()  # a sweep parameter's values, in listed order


@dataclass(frozen=True)
class Outcome:
    name: str
    value: float
    sem: float | None = None
    series: tuple[float, ...] = ()  # sweeps: a learning curve


@dataclass(frozen=True)
class Trial:
    trial_id: int
    stimuli: list[dict[str, Value]]
    state: str
    phase_index: int
    phase_name: str
    outcomes: list[Outcome] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    sweep_index: int | None = None  # sweeps: index i, run i div p, permutation i mod p
    sweep_run: int | None = None
    sweep_permutation: int | None = None

    @property
    def params(self) -> dict[str, Value]:
        """The (first) stimulus' parameter values."""
        return self.stimuli[0]


@dataclass(frozen=True)
class AskResult:
    trials: list[Trial]
    is_finished: bool
    precomputed: bool
    fit_seconds: float
    generate_seconds: float
    wait_seconds: float
    phase_index: int
    phase_name: str
    retry_after_seconds: float = 0.0  # sweeps: all remaining indices are leased; the earliest lease ends then

    @property
    def config(self) -> dict[str, list[Any]]:
        """AEPsych-shaped: {parameter: [value per trial]} (pairs for pairwise experiments)."""
        if not self.trials:
            return {}
        names = list(self.trials[0].stimuli[0])
        if len(self.trials[0].stimuli) == 1:
            return {n: [t.stimuli[0][n] for t in self.trials] for n in names}
        return {n: [[s[n] for s in t.stimuli] for t in self.trials] for n in names}

    def __getitem__(self, key: str) -> Any:  # aepsych_client-style dict access
        if key == "config":
            return self.config
        if key == "num_points":
            return len(self.trials)
        return getattr(self, key)


@dataclass(frozen=True)
class TellResult:
    trial_id: int
    trials_recorded: int
    model_data_added: int
    duplicate: bool
    trials_completed: int
    is_finished: bool

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True)
class Phase:
    index: int
    name: str
    generator: str
    model: str
    acqf: str
    asks: int
    finished: bool


@dataclass(frozen=True)
class SweepSummary:
    """A parameter sweep's parameters and progress (done / leased / missing of permutations x runs)."""

    permutations: int
    runs: int
    total: int
    done: int
    leased: int
    missing: int
    failed: int
    order: str
    seed: int
    parameters: dict[str, tuple[Value, ...]]
    description: dict[str, Any]


@dataclass(frozen=True)
class StrategySummary:
    strategy_id: int
    name: str
    metadata: dict[str, str]
    phases: list[Phase]
    current_phase_index: int
    is_finished: bool
    trials_asked: int
    trials_completed: int
    trials_pending: int
    model_data_points: int
    parameters: list[Parameter]
    sweep: SweepSummary | None = None
    seed: int = 0  # the experiment seed (the config's, or drawn by the server): set it in [common] to repeat a run
    seed_from_config: bool = False
    resident: bool = True  # False: the server evicted it from memory (it comes back on the next request that needs it)


@dataclass(frozen=True)
class ConfigureResult:
    strategy_id: int
    parameters: list[Parameter]
    warnings: list[str]
    summary: StrategySummary

    def __getitem__(self, key: str) -> Any:
        return self.strategy_id if key == "strat_id" else getattr(self, key)


@dataclass(frozen=True)
class Prediction:
    x: dict[str, Value]
    mean: float
    variance: float
    probability: float
    lower: float
    upper: float
    #: ordinal outcomes: P(level k) for k = 0..n_levels-1 (``probability`` is then the expected level)
    level_probabilities: tuple[float, ...] = ()


@dataclass(frozen=True)
class QueryResult:
    query_type: str
    probability_space: bool
    predictions: list[Prediction]
    fit_seconds: float
    #: the outcome whose model answered
    outcome: str = ""

    @property
    def x(self) -> dict[str, list[Value]]:
        return {n: [p.x[n] for p in self.predictions] for n in (self.predictions[0].x if self.predictions else {})}

    @property
    def y(self) -> list[float]:
        return [p.probability if self.probability_space else p.mean for p in self.predictions]


@dataclass(frozen=True)
class InfoResult:
    strategy_id: int
    db_name: str
    strat_count: int
    all_strat_names: list[str]
    current_strat_index: int
    current_strat_name: str
    current_strat_data_pts: int
    current_strat_model: str
    current_strat_acqf: str
    current_strat_finished: bool
    current_strat_can_fit: bool
    summary: StrategySummary

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass(frozen=True)
class FinishResult:
    finished_strategy: str
    finished_strat_idx: int
    is_finished: bool

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


def parse_parameter(p: pb.Parameter) -> Parameter:
    return Parameter(
        name=p.name,
        type=PARAMETER_TYPE_NAMES.get(p.type, "unspecified"),
        lower_bound=p.lower_bound,
        upper_bound=p.upper_bound,
        log_scale=p.log_scale,
        choices=tuple(p.choices),
        value=require_value(p.fixed_value, f"parameters.{p.name}.fixed_value") if p.HasField("fixed_value") else None,
        values=tuple(require_value(v, f"parameters.{p.name}.values") for v in p.values),
    )


def parse_trial(t: pb.Trial) -> Trial:
    return Trial(
        trial_id=t.trial_id,
        stimuli=[from_stimulus(s) for s in t.stimuli],
        state=TRIAL_STATE_NAMES.get(t.state, "unspecified"),
        phase_index=t.phase_index,
        phase_name=t.phase_name,
        outcomes=[Outcome(o.name, o.value, o.sem if o.HasField("sem") else None, tuple(o.series)) for o in t.outcomes],
        metadata=dict(t.metadata),
        sweep_index=t.sweep_index if t.HasField("sweep_index") else None,
        sweep_run=t.sweep_run if t.HasField("sweep_index") else None,
        sweep_permutation=t.sweep_permutation if t.HasField("sweep_index") else None,
    )




def parse_sweep_summary(s: pb.SweepSummary) -> SweepSummary:
    import json

    return SweepSummary(
        permutations=s.permutations,
        runs=s.runs,
        total=s.total,
        done=s.done,
        leased=s.leased,
        missing=s.missing,
        failed=s.failed,
        order=SWEEP_ORDER_NAMES.get(s.order, "index"),
        seed=s.seed,
        parameters={p.name: tuple(require_value(v, f"sweep.parameters.{p.name}") for v in p.values) for p in s.parameters},
        description=json.loads(s.description_json) if s.description_json else {},
    )


def parse_summary(s: pb.StrategySummary) -> StrategySummary:
    return StrategySummary(
        strategy_id=s.strategy_id,
        name=s.name,
        metadata=dict(s.metadata),
        phases=[Phase(p.index, p.name, p.generator, p.model, p.acqf, p.asks, p.finished) for p in s.phases],
        current_phase_index=s.current_phase_index,
        is_finished=s.is_finished,
        trials_asked=s.trials_asked,
        trials_completed=s.trials_completed,
        trials_pending=s.trials_pending,
        model_data_points=s.model_data_points,
        parameters=[parse_parameter(p) for p in s.parameters],
        sweep=parse_sweep_summary(s.sweep) if s.HasField("sweep") else None,
        seed=s.seed,
        seed_from_config=s.seed_from_config,
        resident=s.resident,
    )


# ---------------------------------------------------------------------------- calls


@dataclass
class Call(Generic[T]):
    """One RPC: the stub method name, its request, and how to turn the reply into a result."""

    method: str
    request: Any
    parse: Callable[[Any], T]


def _outcomes(outcome: float | int | bool | Mapping[str, float] | Sequence[float] | None, sem: float | None) -> list[pb.Outcome]:
    if outcome is None:
        raise ValueError("outcome is required")
    if isinstance(outcome, Mapping):
        return [_named_outcome(str(k), v) for k, v in outcome.items()]
    if isinstance(outcome, Sequence) and not isinstance(outcome, (str, bytes)):
        if len(outcome) != 1:
            raise ValueError("give one outcome per tell (a dict for several named outcomes)")
        outcome = outcome[0]
    msg = pb.Outcome(value=float(outcome))  # type: ignore[arg-type]
    if sem is not None:
        msg.sem = sem
    return [msg]


def _named_outcome(name: str, value: Any) -> pb.Outcome:
    """A named metric: a number, or a sequence of numbers (a series, e.g. a learning curve, whose
    scalar value is its last element)."""
    if (isinstance(value, Sequence) and not isinstance(value, str | bytes)) or hasattr(value, "tolist"):
        series = [float(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]
        if isinstance(series, float):  # a numpy scalar
            return pb.Outcome(name=name, value=series)
        if not series:
            raise ValueError(f"outcome {name!r}: an empty series")
        return pb.Outcome(name=name, value=series[-1], series=series)
    return pb.Outcome(name=name, value=float(value))


def _stimuli_from_config(config: Mapping[str, Any], stimuli_per_trial: int | None = None) -> list[pb.Stimulus]:
    """AEPsych-shaped {name: value | [value] | [[a, b]]} for one trial -> stimuli."""
    unwrapped: dict[str, Any] = {}
    for name, value in config.items():
        if isinstance(value, (list, tuple)):
            if len(value) != 1:
                raise ValueError(f"config[{name!r}]: tell one trial at a time (got {len(value)} values)")
            value = value[0]
        unwrapped[name] = value
    pairwise = any(isinstance(v, (list, tuple)) for v in unwrapped.values())
    if not pairwise:
        return [to_stimulus(unwrapped)]
    count = max(len(v) for v in unwrapped.values() if isinstance(v, (list, tuple)))
    return [to_stimulus({n: (v[i] if isinstance(v, (list, tuple)) else v) for n, v in unwrapped.items()}) for i in range(count)]


class RequestBuilder:
    """Builds Calls and keeps the client-side state (configured strategy ids, current strategy)."""

    def __init__(self) -> None:
        self.configs: list[int] = []
        self.config_names: dict[str, int] = {}
        self.strategy_id: int | None = None

    def _sid(self, strategy_id: int | None) -> int:
        sid = strategy_id if strategy_id is not None else self.strategy_id
        if sid is None:
            raise ValueError("no strategy: call configure() or resume() first, or pass strategy_id=")
        return sid

    def configure(
        self,
        config_path: str | None = None,
        config_str: str | None = None,
        config_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> Call[ConfigureResult]:
        if (config_path is None) == (config_str is None):
            raise ValueError("pass exactly one of config_path and config_str")
        if config_path is not None:
            with open(config_path, encoding="utf-8") as f:
                config_str = f.read()
        request = pb.ConfigureRequest(
            config_ini=config_str or "", name=config_name or "", metadata=dict(metadata or {}), request_id=request_id
        )

        def parse(reply: pb.ConfigureResponse) -> ConfigureResult:
            self.configs.append(reply.strategy_id)
            if config_name:
                self.config_names[config_name] = reply.strategy_id
            self.strategy_id = reply.strategy_id
            return ConfigureResult(
                reply.strategy_id,
                [parse_parameter(p) for p in reply.parameters],
                list(reply.warnings),
                parse_summary(reply.summary),
            )

        return Call("Configure", request, parse)

    def resume(self, config_id: int | None = None, config_name: str | None = None) -> Call[StrategySummary]:
        if config_name is not None:
            request = pb.ResumeRequest(name=config_name)
        elif config_id is not None:
            request = pb.ResumeRequest(strategy_id=config_id)
        else:
            raise ValueError("pass config_id or config_name")

        def parse(reply: pb.ResumeResponse) -> StrategySummary:
            self.strategy_id = reply.summary.strategy_id
            return parse_summary(reply.summary)

        return Call("Resume", request, parse)

    def ask(
        self,
        num_points: int = 1,
        fixed_pars: Mapping[str, Value] | None = None,
        strategy_id: int | None = None,
        request_id: str = "",
        ttl_seconds: float = 0.0,
    ) -> Call[AskResult]:
        request = pb.AskRequest(
            strategy_id=self._sid(strategy_id),
            num_points=num_points,
            fixed_parameters=to_values(fixed_pars or {}),
            request_id=request_id,
            ttl_seconds=ttl_seconds,
        )

        def parse(reply: pb.AskResponse) -> AskResult:
            return AskResult(
                trials=[parse_trial(t) for t in reply.trials],
                is_finished=reply.is_finished,
                precomputed=reply.precomputed,
                fit_seconds=reply.timings.fit_seconds,
                generate_seconds=reply.timings.generate_seconds,
                wait_seconds=reply.timings.wait_seconds,
                phase_index=reply.phase_index,
                phase_name=reply.phase_name,
                retry_after_seconds=reply.retry_after_seconds,
            )

        return Call("Ask", request, parse)

    def tell(
        self,
        config: Mapping[str, Any] | None = None,
        outcome: Any = None,
        model_data: bool = True,
        trial_id: int | None = None,
        strategy_id: int | None = None,
        sem: float | None = None,
        request_id: str = "",
        **metadata: Any,
    ) -> Call[TellResult]:
        if (config is None) == (trial_id is None):
            raise ValueError("pass exactly one of config= and trial_id=")
        request = pb.TellRequest(
            strategy_id=self._sid(strategy_id),
            outcomes=_outcomes(outcome, sem),
            model_data=model_data,
            metadata={k: str(v) for k, v in metadata.items()},
            request_id=request_id,
        )
        if trial_id is not None:
            request.trial_id = trial_id
        else:
            assert config is not None
            request.stimuli.stimuli.extend(_stimuli_from_config(config))

        def parse(reply: pb.TellResponse) -> TellResult:
            return TellResult(
                reply.trial_id,
                reply.trials_recorded,
                reply.model_data_added,
                reply.duplicate,
                reply.trials_completed,
                reply.is_finished,
            )

        return Call("Tell", request, parse)

    def query(
        self,
        query_type: str = "max",
        probability_space: bool = False,
        x: Mapping[str, Any] | Sequence[Mapping[str, Value]] | None = None,
        y: float | None = None,
        constraints: Mapping[str | int, Value] | None = None,
        strategy_id: int | None = None,
        outcome: str = "",
    ) -> Call[QueryResult]:
        if query_type not in QUERY_TYPE_ENUMS:
            raise ValueError(f"query_type must be one of {list(QUERY_TYPE_ENUMS)}")
        points: list[Mapping[str, Value]] = []
        if isinstance(x, Mapping):  # AEPsych shape {name: [v1, v2, ...]} or {name: v}
            columns = {k: (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in x.items()}
            count = max((len(v) for v in columns.values()), default=0)
            points = [{k: v[i] for k, v in columns.items()} for i in range(count)]
        elif x is not None:
            points = list(x)
        named = {str(key): value for key, value in (constraints or {}).items()}  # the server resolves indices
        request = pb.QueryRequest(
            strategy_id=self._sid(strategy_id),
            query_type=QUERY_TYPE_ENUMS[query_type],
            probability_space=probability_space,
            x=[to_stimulus(p) for p in points],
            constraints=to_values(named),
            outcome=outcome,
        )
        if y is not None:
            request.y = float(y)

        def parse(reply: pb.QueryResponse) -> QueryResult:
            preds = [
                Prediction(
                    from_stimulus(p.x), p.mean, p.variance, p.probability, p.lower, p.upper, tuple(p.level_probabilities)
                )
                for p in reply.predictions
            ]
            return QueryResult(
                QUERY_TYPE_NAMES.get(reply.query_type, query_type), reply.probability_space, preds, reply.fit_seconds, reply.outcome
            )

        return Call("Query", request, parse)

    def info(self, strategy_id: int | None = None) -> Call[InfoResult]:
        def parse(r: pb.InfoResponse) -> InfoResult:
            return InfoResult(
                r.strategy_id,
                r.db_name,
                r.strat_count,
                list(r.all_strat_names),
                r.current_strat_index,
                r.current_strat_name,
                r.current_strat_data_pts,
                r.current_strat_model,
                r.current_strat_acqf,
                r.current_strat_finished,
                r.current_strat_can_fit,
                parse_summary(r.summary),
            )

        return Call("Info", pb.InfoRequest(strategy_id=self._sid(strategy_id)), parse)

    def parameters(self, strategy_id: int | None = None) -> Call[dict[str, Parameter]]:
        return Call(
            "Parameters",
            pb.ParametersRequest(strategy_id=self._sid(strategy_id)),
            lambda r: {p.name: parse_parameter(p) for p in r.parameters},
        )

    def get_config(
        self, section: str | None = None, property: str | None = None, strategy_id: int | None = None
    ) -> Call[dict[str, dict[str, str]]]:
        request = pb.GetConfigRequest(strategy_id=self._sid(strategy_id), section=section or "", property=property or "")
        return Call("GetConfig", request, lambda r: {s: dict(v.values) for s, v in r.sections.items()})

    def finish_strategy(self, strategy_id: int | None = None) -> Call[FinishResult]:
        return Call(
            "FinishStrategy",
            pb.FinishStrategyRequest(strategy_id=self._sid(strategy_id)),
            lambda r: FinishResult(r.finished_strategy, r.finished_strat_idx, r.is_finished),
        )

    def list_strategies(self) -> Call[list[StrategySummary]]:
        return Call("ListStrategies", pb.ListStrategiesRequest(), lambda r: [parse_summary(s) for s in r.strategies])

    def list_trials(self, state: str | None = None, strategy_id: int | None = None) -> Call[list[Trial]]:
        request = pb.ListTrialsRequest(
            strategy_id=self._sid(strategy_id), state=TRIAL_STATE_ENUMS[state] if state else pb.TRIAL_STATE_UNSPECIFIED
        )
        return Call("ListTrials", request, lambda r: [parse_trial(t) for t in r.trials])

    def abandon_trial(self, trial_id: int, failed: bool = False, reason: str = "", strategy_id: int | None = None) -> Call[Trial]:
        request = pb.AbandonTrialRequest(strategy_id=self._sid(strategy_id), trial_id=trial_id, failed=failed, reason=reason)
        return Call("AbandonTrial", request, lambda r: parse_trial(r.trial))

    # ------------------------------------------------------------------ parameter sweeps
    def configure_sweep(
        self,
        description: Mapping[str, Any] | str,
        runs: int = 1,
        order: str = "index",
        seed: int | None = None,
        config_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> Call[ConfigureResult]:
        """A PyExpUtils-style sweep: a description dict (or its JSON text) with `metaParameters`."""
        import json

        if order not in SWEEP_ORDER_ENUMS:
            raise ValueError(f"order must be one of {list(SWEEP_ORDER_ENUMS)}, got {order!r}")
        text = description if isinstance(description, str) else json.dumps(description)
        sweep = pb.SweepConfig(description_json=text, runs=runs, order=SWEEP_ORDER_ENUMS[order])
        if seed is not None:
            sweep.seed = seed
        request = pb.ConfigureRequest(name=config_name or "", metadata=dict(metadata or {}), request_id=request_id, sweep=sweep)
        call = self.configure(config_str="", config_name=config_name, metadata=metadata, request_id=request_id)
        call.request = request
        return call

    def list_missing(self, runs: int = 0, strategy_id: int | None = None) -> Call[MissingResults]:
        request = pb.ListMissingResultsRequest(strategy_id=self._sid(strategy_id), runs=runs)
        return Call(
            "ListMissingResults",
            request,
            lambda r: MissingResults(list(r.indices), list(r.leased_indices), list(r.failed_indices)),
        )

    def extend_sweep(self, runs: int, strategy_id: int | None = None) -> Call[StrategySummary]:
        request = pb.ExtendSweepRequest(strategy_id=self._sid(strategy_id), runs=runs)
        return Call("ExtendSweep", request, lambda r: parse_summary(r.summary))

    def sweep_results(
        self,
        last_n: int | None = None,
        last_percent: float | None = None,
        best_metric: str = "",
        best_mode: str = "max",
        include_runs: bool = True,
        strategy_id: int | None = None,
    ) -> Call[SweepResultsData]:
        if last_n is not None and last_percent is not None:
            raise ValueError("give last_n or last_percent, not both")
        if best_mode not in SWEEP_BEST_MODE_ENUMS:
            raise ValueError(f"best_mode must be max or min, got {best_mode!r}")
        request = pb.GetSweepResultsRequest(
            strategy_id=self._sid(strategy_id),
            best_metric=best_metric,
            best_mode=SWEEP_BEST_MODE_ENUMS[best_mode],
            include_runs=include_runs,
        )
        if last_n is not None:
            request.last_n = last_n
        if last_percent is not None:
            request.last_percent = last_percent

        def parse(r: pb.GetSweepResultsResponse) -> SweepResultsData:
            return SweepResultsData(
                permutations=[
                    PermutationResult(
                        p.permutation,
                        _ordered(from_stimulus(p.parameters), r.parameter_names),
                        p.runs_done,
                        {m.name: MetricSummary(m.mean, m.sem, m.count) for m in p.metrics},
                    )
                    for p in r.permutations
                ],
                best_permutation=r.best_permutation if r.HasField("best_permutation") else None,
                runs=[
                    RunResult(x.index, x.run, x.permutation, x.trial_id, {o.name: o.value for o in x.metrics}, {o.name: x.series_lengths.get(o.name, 0) for o in x.metrics})
                    for x in r.runs
                ],
                parameter_names=list(r.parameter_names),
            )

        return Call("GetSweepResults", request, parse)


def _ordered(values: dict[str, Value], names: Sequence[str]) -> dict[str, Value]:
    return {n: values[n] for n in names if n in values} | {n: v for n, v in values.items() if n not in names}


@dataclass(frozen=True)
class MissingResults:
    """Indices without a result (ascending), and which of them are leased or failed."""

    indices: list[int]
    leased: list[int]
    failed: list[int]


@dataclass(frozen=True)
class MetricSummary:
    mean: float
    sem: float
    count: int


@dataclass(frozen=True)
class PermutationResult:
    permutation: int
    parameters: dict[str, Value]
    runs_done: int
    metrics: dict[str, MetricSummary]


@dataclass(frozen=True)
class RunResult:
    index: int
    run: int
    permutation: int
    trial_id: int
    metrics: dict[str, float]
    series_lengths: dict[str, int]


@dataclass(frozen=True)
class SweepResultsData:
    permutations: list[PermutationResult]
    best_permutation: int | None
    runs: list[RunResult]
    parameter_names: list[str] = field(default_factory=list)
