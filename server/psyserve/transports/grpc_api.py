"""gRPC transport: translates psyserve.v1 messages to ExperimentService calls and back.

Holds no experiment logic: unpack the request, call the service, build the reply, map errors
to status codes (with google.rpc.BadRequest field violations).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from psyserve_client._common import to_value
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc

from ..config import ExperimentSpec
from ..errors import ServiceError
from ..journal import JournalError
from ..params import ParameterSpec, ParamType, RawValue, Stimulus
from ..service import ArmEstimate, ExperimentService, StrategyView, TypedExperiment, TypedObjective, TypedParameter
from ..strategy import ABANDONED, COMPLETED, FAILED, PENDING, OutcomeValue, TrialRecord

log = logging.getLogger(__name__)

_PARAM_TYPES = {
    ParamType.CONTINUOUS: pb.PARAMETER_TYPE_CONTINUOUS,
    ParamType.INTEGER: pb.PARAMETER_TYPE_INTEGER,
    ParamType.BINARY: pb.PARAMETER_TYPE_BINARY,
    ParamType.FIXED: pb.PARAMETER_TYPE_FIXED,
    ParamType.CATEGORICAL: pb.PARAMETER_TYPE_CATEGORICAL,
}
_OUTCOME_TYPES = {"binary": pb.OUTCOME_TYPE_BINARY, "continuous": pb.OUTCOME_TYPE_CONTINUOUS, "ordinal": pb.OUTCOME_TYPE_ORDINAL}
_TRIAL_STATES = {
    PENDING: pb.TRIAL_STATE_PENDING,
    COMPLETED: pb.TRIAL_STATE_COMPLETED,
    FAILED: pb.TRIAL_STATE_FAILED,
    ABANDONED: pb.TRIAL_STATE_ABANDONED,
}
_STATE_NAMES = {v: k for k, v in _TRIAL_STATES.items()}
_QUERY_TYPES = {
    pb.QUERY_TYPE_MAX: "max",
    pb.QUERY_TYPE_MIN: "min",
    pb.QUERY_TYPE_PREDICTION: "prediction",
    pb.QUERY_TYPE_INVERSE: "inverse",
}
_QUERY_ENUMS = {v: k for k, v in _QUERY_TYPES.items()}


# ---------------------------------------------------------------------- value conversion (to the wire: psyserve_client.to_value)
def value_from_pb(value: pb.ParameterValue) -> RawValue | None:
    kind = value.WhichOneof("kind")
    if kind is None:
        return None
    return getattr(value, kind)  # type: ignore[no-any-return]


def values_from_pb(values: Mapping[str, pb.ParameterValue]) -> dict[str, Any]:
    return {name: value_from_pb(v) for name, v in values.items()}


def stimulus_to_pb(stimulus: Stimulus) -> pb.Stimulus:
    return pb.Stimulus(values={k: to_value(v) for k, v in stimulus.items()})


def parameter_to_pb(p: ParameterSpec) -> pb.Parameter:
    msg = pb.Parameter(name=p.name, type=_PARAM_TYPES[p.type], lower_bound=p.lower, upper_bound=p.upper, log_scale=p.log_scale)
    msg.choices.extend(p.choices)
    msg.value_type = p.value_type
    msg.is_ordered = p.is_ordered if p.type is ParamType.CATEGORICAL else False
    if p.digits is not None:
        msg.digits = p.digits
    if p.value is not None:
        msg.fixed_value.CopyFrom(to_value(p.value))
    return msg


def parameters_to_pb(spec: ExperimentSpec) -> list[pb.Parameter]:
    return [parameter_to_pb(p) for p in spec.space.parameters]


def trial_to_pb(trial: TrialRecord, spec: ExperimentSpec) -> pb.Trial:
    msg = pb.Trial(
        trial_id=trial.trial_id,
        stimuli=[stimulus_to_pb(s) for s in trial.stimuli],
        state=_TRIAL_STATES[trial.state],
        phase_index=trial.phase_index,
        phase_name=spec.phases[trial.phase_index].name,
        metadata={k: str(v) for k, v in trial.metadata.items()},
        asked_at=trial.asked_at,
        told_at=trial.told_at or 0.0,
        model_data=trial.model_data,
    )
    if trial.sample_size is not None:
        msg.sample_size = trial.sample_size
    for o in trial.outcomes:
        out = msg.outcomes.add(name=o.name, value=o.value)
        if o.sem is not None:
            out.sem = o.sem
    return msg


def summary_to_pb(view: StrategyView) -> pb.StrategySummary:
    spec = view.spec
    return pb.StrategySummary(
        strategy_id=view.strategy_id,
        name=view.name,
        metadata=view.metadata,
        phases=[
            pb.PhaseSummary(
                index=p.index, name=p.name, generator=p.generator, model=p.model, acqf=p.acqf, asks=p.asks, finished=p.finished
            )
            for p in view.phases
        ],
        current_phase_index=view.current_phase_index,
        is_finished=view.is_finished,
        trials_asked=view.trials_asked,
        trials_completed=view.trials_completed,
        trials_pending=view.trials_pending,
        model_data_points=view.model_data_points,
        created_at=view.created_at,
        parameters=parameters_to_pb(spec),
        stimuli_per_trial=spec.stimuli_per_trial,
        outcome_types=[_OUTCOME_TYPES[t] for t in spec.outcome_types],
        outcome_names=list(spec.outcome_names),
        optimization=optimization_to_pb(spec),
    )


_METHODS = {"fast": pb.GENERATION_METHOD_FAST, "random_search": pb.GENERATION_METHOD_RANDOM_SEARCH}
_VALUE_TYPES = {pb.VALUE_TYPE_FLOAT: "float", pb.VALUE_TYPE_INT: "int", pb.VALUE_TYPE_STR: "str", pb.VALUE_TYPE_BOOL: "bool"}


def optimization_to_pb(spec: ExperimentSpec) -> pb.OptimizationConfig | None:
    opt = spec.optimization
    if opt is None:
        return None
    msg = pb.OptimizationConfig(
        parameter_constraints=[c.text for c in opt.parameter_constraints],
        outcome_constraints=[c.text for c in opt.outcome_constraints],
        tracking_metrics=list(opt.tracking_metrics),
    )
    for o in opt.objectives:
        objective = msg.objectives.add(metric=o.metric, minimize=o.minimize)
        if o.threshold is not None:
            objective.threshold = o.threshold
    model_phases = [p for p in spec.phases if p.is_model_based]
    gs = msg.generation_strategy
    gs.method = _METHODS["fast" if model_phases else "random_search"]
    gs.max_parallelism = opt.max_parallelism
    if model_phases:
        gs.initialization_trials = sum(p.max_asks or 0 for p in spec.phases if not p.is_model_based)
        gs.num_restarts = int(model_phases[0].generator_options.get("restarts", 10))
        gs.raw_samples = int(model_phases[0].generator_options.get("samps", 512))
    if spec.seed is not None:
        gs.seed = spec.seed
    return msg


def typed_experiment_from_pb(msg: pb.ExperimentConfig, metadata: Mapping[str, str]) -> TypedExperiment:
    parameters = []
    for p in msg.parameters:
        kind = p.WhichOneof("kind") or ""
        if kind == "range":
            r = p.range
            parameters.append(
                TypedParameter(
                    p.name, "range", lower=r.lower, upper=r.upper, value_type=_VALUE_TYPES.get(r.value_type, ""),
                    log_scale=r.log_scale, digits=r.digits if r.HasField("digits") else None,
                )
            )
        elif kind == "choice":
            values = tuple(v for v in (value_from_pb(v) for v in p.choice.values) if v is not None)
            parameters.append(TypedParameter(p.name, "choice", values=values, is_ordered=p.choice.is_ordered))
        elif kind == "fixed":
            parameters.append(TypedParameter(p.name, "fixed", value=value_from_pb(p.fixed.value)))
        else:
            parameters.append(TypedParameter(p.name, kind))
    opt = msg.optimization
    gs = opt.generation_strategy
    return TypedExperiment(
        parameters=tuple(parameters),
        objectives=tuple(TypedObjective(o.metric, o.minimize, o.threshold if o.HasField("threshold") else None) for o in opt.objectives),
        parameter_constraints=tuple(opt.parameter_constraints),
        outcome_constraints=tuple(opt.outcome_constraints),
        tracking_metrics=tuple(opt.tracking_metrics),
        method="random_search" if gs.method == pb.GENERATION_METHOD_RANDOM_SEARCH else "fast",
        initialization_trials=gs.initialization_trials if gs.HasField("initialization_trials") else None,
        seed=gs.seed if gs.HasField("seed") else None,
        max_parallelism=gs.max_parallelism,
        num_restarts=gs.num_restarts,
        raw_samples=gs.raw_samples,
    )


def arm_to_pb(arm: ArmEstimate) -> pb.ArmEstimate:
    return pb.ArmEstimate(
        trial_id=arm.trial_id,
        parameters=stimulus_to_pb(arm.parameters),
        estimates=[pb.MetricEstimate(metric=m, mean=v, sem=arm.sems[m]) for m, v in arm.means.items()],
    )


# ---------------------------------------------------------------------- errors
_CODES = {
    "INVALID_ARGUMENT": (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    "NOT_FOUND": (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    "ALREADY_EXISTS": (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    "FAILED_PRECONDITION": (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    "RESOURCE_EXHAUSTED": (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    "UNAVAILABLE": (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    "DEADLINE_EXCEEDED": (grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED),
    "INTERNAL": (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL),
}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


async def abort(context: grpc.aio.ServicerContext, error: ServiceError) -> None:
    grpc_code, rpc_code = _CODES.get(error.code, _CODES["INTERNAL"])
    status = status_pb2.Status(code=rpc_code, message=error.message)
    if error.field:
        detail = error_details_pb2.BadRequest(
            field_violations=[error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.message)]
        )
        status.details.add().Pack(detail)
    converted = rpc_status.to_status(status)
    await context.abort(grpc_code, error.message, converted.trailing_metadata)


def handles_errors(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn domain errors into gRPC statuses; anything unexpected is INTERNAL and logged."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            return await method(self, request, context)
        except ServiceError as exc:
            await abort(context, exc)
        except JournalError as exc:
            log.error("journal error in %s: %s", method.__name__, exc)
            await abort(context, ServiceError(f"journal unavailable: {exc}"))
            raise
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            log.exception("internal error in %s", method.__name__)
            await abort(context, ServiceError(f"internal error: {type(exc).__name__}: {exc}"))
        raise AssertionError("unreachable")

    return wrapper


# ---------------------------------------------------------------------- servicer
class ExperimentServicer(service_pb2_grpc.ExperimentServiceServicer):
    def __init__(self, service: ExperimentService) -> None:
        self.service = service

    @handles_errors
    async def Configure(self, request: pb.ConfigureRequest, context: grpc.aio.ServicerContext) -> pb.ConfigureResponse:
        experiment = typed_experiment_from_pb(request.experiment, request.metadata) if request.HasField("experiment") else None
        result = await self.service.configure(request.config_ini, request.name, dict(request.metadata), request.request_id, experiment)
        view = result.strategy
        return pb.ConfigureResponse(
            strategy_id=view.strategy_id,
            parameters=parameters_to_pb(view.spec),
            warnings=result.warnings,
            summary=summary_to_pb(view),
        )

    @handles_errors
    async def Resume(self, request: pb.ResumeRequest, context: grpc.aio.ServicerContext) -> pb.ResumeResponse:
        which = request.WhichOneof("strategy")
        if which == "name":
            view = self.service.resume(name=request.name)
        else:
            view = self.service.resume(strategy_id=request.strategy_id if which else None)
        return pb.ResumeResponse(summary=summary_to_pb(view))

    @handles_errors
    async def Ask(self, request: pb.AskRequest, context: grpc.aio.ServicerContext) -> pb.AskResponse:
        result = await self.service.ask(
            request.strategy_id,
            request.num_points,
            values_from_pb(request.fixed_parameters),
            request.request_id,
            request.ttl_seconds,
        )
        spec = self.service.get(request.strategy_id).spec
        return pb.AskResponse(
            trials=[trial_to_pb(t, spec) for t in result.trials],
            is_finished=result.is_finished,
            precomputed=result.precomputed,
            timings=pb.Timings(
                fit_seconds=result.fit_seconds, generate_seconds=result.generate_seconds, wait_seconds=result.wait_seconds
            ),
            phase_index=result.phase_index,
            phase_name=result.phase_name,
        )

    @handles_errors
    async def Tell(self, request: pb.TellRequest, context: grpc.aio.ServicerContext) -> pb.TellResponse:
        which = request.WhichOneof("target")
        outcomes = [OutcomeValue(o.name, o.value, o.sem if o.HasField("sem") else None) for o in request.outcomes]
        result = await self.service.tell(
            request.strategy_id,
            outcomes,
            trial_id=request.trial_id if which == "trial_id" else None,
            stimuli=[values_from_pb(s.values) for s in request.stimuli.stimuli] if which == "stimuli" else None,
            model_data=request.model_data if request.HasField("model_data") else True,
            metadata=dict(request.metadata),
            request_id=request.request_id,
            sample_size=request.sample_size if request.HasField("sample_size") else None,
        )
        return pb.TellResponse(
            trial_id=result.trial_id,
            trials_recorded=result.trials_recorded,
            model_data_added=result.model_data_added,
            duplicate=result.duplicate,
            trials_completed=result.trials_completed,
            is_finished=result.is_finished,
        )

    @handles_errors
    async def Query(self, request: pb.QueryRequest, context: grpc.aio.ServicerContext) -> pb.QueryResponse:
        result = await self.service.query(
            request.strategy_id,
            _QUERY_TYPES.get(request.query_type, "unspecified"),
            request.probability_space,
            x=[values_from_pb(s.values) for s in request.x],
            y=request.y if request.HasField("y") else None,
            constraints=values_from_pb(request.constraints),
        )
        return pb.QueryResponse(
            query_type=_QUERY_ENUMS[result.query_type],
            probability_space=result.probability_space,
            predictions=[
                pb.Prediction(
                    x=stimulus_to_pb(p.x),
                    mean=p.mean,
                    variance=p.variance,
                    probability=p.probability,
                    lower=p.lower,
                    upper=p.upper,
                )
                for p in result.points
            ],
            fit_seconds=result.fit_seconds,
        )

    @handles_errors
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        info, view = self.service.info(request.strategy_id)
        return pb.InfoResponse(**dataclasses.asdict(info), summary=summary_to_pb(view))

    @handles_errors
    async def Parameters(self, request: pb.ParametersRequest, context: grpc.aio.ServicerContext) -> pb.ParametersResponse:
        return pb.ParametersResponse(parameters=parameters_to_pb(self.service.parameters(request.strategy_id)))

    @handles_errors
    async def GetConfig(self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext) -> pb.GetConfigResponse:
        sections = self.service.get_config(request.strategy_id, request.section, request.property)
        return pb.GetConfigResponse(sections={s: pb.ConfigSection(values=v) for s, v in sections.items()})

    @handles_errors
    async def FinishStrategy(
        self, request: pb.FinishStrategyRequest, context: grpc.aio.ServicerContext
    ) -> pb.FinishStrategyResponse:
        result = await self.service.finish_strategy(request.strategy_id)
        return pb.FinishStrategyResponse(
            finished_strategy=result.finished_strategy,
            finished_strat_idx=result.finished_strat_idx,
            is_finished=result.is_finished,
        )

    @handles_errors
    async def ListStrategies(
        self, request: pb.ListStrategiesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListStrategiesResponse:
        return pb.ListStrategiesResponse(strategies=[summary_to_pb(v) for v in self.service.list_strategies()])

    @handles_errors
    async def ListTrials(self, request: pb.ListTrialsRequest, context: grpc.aio.ServicerContext) -> pb.ListTrialsResponse:
        state = _STATE_NAMES.get(request.state) if request.state else None
        trials = self.service.list_trials(request.strategy_id, state)
        spec = self.service.get(request.strategy_id).spec
        return pb.ListTrialsResponse(trials=[trial_to_pb(t, spec) for t in trials])

    @handles_errors
    async def AbandonTrial(self, request: pb.AbandonTrialRequest, context: grpc.aio.ServicerContext) -> pb.AbandonTrialResponse:
        trial = await self.service.abandon_trial(request.strategy_id, request.trial_id, request.failed, request.reason)
        return pb.AbandonTrialResponse(trial=trial_to_pb(trial, self.service.get(request.strategy_id).spec))

    @handles_errors
    async def AttachTrial(self, request: pb.AttachTrialRequest, context: grpc.aio.ServicerContext) -> pb.AttachTrialResponse:
        trial = await self.service.attach_trial(
            request.strategy_id, values_from_pb(request.parameters.values), request.ttl_seconds, request.request_id
        )
        return pb.AttachTrialResponse(trial=trial_to_pb(trial, self.service.get(request.strategy_id).spec))

    @handles_errors
    async def GetBestParameters(
        self, request: pb.GetBestParametersRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBestParametersResponse:
        best = await self.service.best_parameters(request.strategy_id, use_model=not request.use_observed)
        if best is None:
            return pb.GetBestParametersResponse(found=False)
        return pb.GetBestParametersResponse(found=True, best=arm_to_pb(best))

    @handles_errors
    async def GetParetoFront(self, request: pb.GetParetoFrontRequest, context: grpc.aio.ServicerContext) -> pb.GetParetoFrontResponse:
        front = await self.service.pareto_front(request.strategy_id, use_model=not request.use_observed)
        return pb.GetParetoFrontResponse(front=[arm_to_pb(a) for a in front])

    @handles_errors
    async def PredictMetrics(self, request: pb.PredictMetricsRequest, context: grpc.aio.ServicerContext) -> pb.PredictMetricsResponse:
        arms = await self.service.predict_metrics(
            request.strategy_id, [values_from_pb(p.values) for p in request.parameters], list(request.metrics)
        )
        return pb.PredictMetricsResponse(predictions=[arm_to_pb(a) for a in arms])

    @handles_errors
    async def GetOptimizationTrace(
        self, request: pb.GetOptimizationTraceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOptimizationTraceResponse:
        trace = await self.service.optimization_trace(request.strategy_id)
        return pb.GetOptimizationTraceResponse(points=[pb.TracePoint(trial_id=t, value=v) for t, v in trace])

    async def ExportData(self, request: pb.ExportDataRequest, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.ExportDataResponse]:
        try:
            strategies = [self.service.get(request.strategy_id)] if request.strategy_id else self.service.strategies()
        except ServiceError as exc:
            await abort(context, exc)
            return
        for strategy in strategies:
            for trial in list(strategy.trials.values()):
                yield pb.ExportDataResponse(
                    strategy_id=strategy.strategy_id, strategy_name=strategy.name, trial=trial_to_pb(trial, strategy.spec)
                )
