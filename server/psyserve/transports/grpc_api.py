"""gRPC transport: translates psyserve.v1 messages to ExperimentService calls and back.

Holds no experiment logic: unpack the request, call the service, build the reply, map errors
to status codes (with google.rpc.BadRequest field violations).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb
from psyserve_client._proto.psyserve.v1 import service_pb2_grpc
from psyserve_client.wire import (
    OUTCOME_TYPE_ENUMS,
    PARAMETER_TYPE_ENUMS,
    QUERY_TYPE_ENUMS,
    QUERY_TYPE_NAMES,
    SWEEP_BEST_MODE_NAMES,
    SWEEP_ORDER_ENUMS,
    SWEEP_ORDER_NAMES,
    TRIAL_STATE_ENUMS,
    TRIAL_STATE_NAMES,
    from_value,
    from_values,
    to_stimulus,
    to_value,
)

from ..errors import ServiceError
from ..params import OutcomeValue, ParameterSpec, ParamType, RawValue
from ..service import (
    ArmEstimate,
    ExperimentService,
    ExperimentShape,
    OptimizationView,
    StrategyView,
    SweepRequest,
    SweepView,
    TrialView,
    TypedExperiment,
    TypedObjective,
    TypedParameter,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- service views -> messages (values: psyserve_client.wire)
def parameter_to_pb(p: ParameterSpec) -> pb.Parameter:
    msg = pb.Parameter(
        name=p.name, type=PARAMETER_TYPE_ENUMS[p.type.value], lower_bound=p.lower, upper_bound=p.upper, log_scale=p.log_scale
    )
    msg.choices.extend(p.choices)
    if p.value is not None:
        msg.fixed_value.CopyFrom(to_value(p.value))
    msg.value_type = p.value_type
    msg.is_ordered = p.is_ordered if p.type is ParamType.CATEGORICAL else False
    if p.digits is not None:
        msg.digits = p.digits
    return msg


def parameters_to_pb(shape: ExperimentShape) -> list[pb.Parameter]:
    return [parameter_to_pb(p) for p in shape.parameters]


def sweep_parameter_to_pb(name: str, values: list[RawValue]) -> pb.Parameter:
    """A sweep parameter as a Parameter: fixed when it has one value, else typed by its values."""
    msg = pb.Parameter(name=name, values=[to_value(v) for v in values])
    if len(values) == 1:
        msg.type = pb.PARAMETER_TYPE_FIXED
        msg.fixed_value.CopyFrom(to_value(values[0]))
    elif all(isinstance(v, bool) for v in values):
        msg.type = pb.PARAMETER_TYPE_BINARY
        msg.upper_bound = 1.0
    elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        msg.type = pb.PARAMETER_TYPE_INTEGER if all(isinstance(v, int) for v in values) else pb.PARAMETER_TYPE_CONTINUOUS
        msg.lower_bound, msg.upper_bound = float(min(values)), float(max(values))  # type: ignore[type-var]
    else:
        msg.type = pb.PARAMETER_TYPE_CATEGORICAL
        msg.choices.extend(str(v) for v in values)
    return msg


def sweep_summary_to_pb(sweep: SweepView) -> pb.SweepSummary:
    p = sweep.progress
    return pb.SweepSummary(
        permutations=p.permutations,
        runs=p.runs,
        total=p.total,
        done=p.done,
        leased=p.leased,
        missing=p.missing,
        failed=p.failed,
        order=SWEEP_ORDER_ENUMS.get(sweep.order, pb.SWEEP_ORDER_UNSPECIFIED),
        seed=sweep.seed,
        parameters=[pb.SweepParameter(name=n, values=[to_value(v) for v in vs]) for n, vs in sweep.parameters],
        description_json=sweep.description_json,
    )


def view_parameters_to_pb(view: StrategyView) -> list[pb.Parameter]:
    if view.sweep is not None:
        return [sweep_parameter_to_pb(n, vs) for n, vs in view.sweep.parameters]
    return parameters_to_pb(view.shape)


def trial_to_pb(trial: TrialView) -> pb.Trial:
    msg = pb.Trial(
        trial_id=trial.trial_id,
        stimuli=[to_stimulus(s) for s in trial.stimuli],
        state=TRIAL_STATE_ENUMS[trial.state],
        phase_index=trial.phase_index,
        phase_name=trial.phase_name,
        metadata={k: str(v) for k, v in trial.metadata.items()},
        asked_at=trial.asked_at,
        told_at=trial.told_at or 0.0,
        model_data=trial.model_data,
    )
    for o in trial.outcomes:
        out = msg.outcomes.add(name=o.name, value=o.value, series=o.series or ())
        if o.sem is not None:
            out.sem = o.sem
    if trial.sample_size is not None:
        msg.sample_size = trial.sample_size
    if trial.sweep_index is not None:
        msg.sweep_index = trial.sweep_index
        msg.sweep_run = trial.sweep_run or 0
        msg.sweep_permutation = trial.sweep_permutation or 0
    return msg


def summary_to_pb(view: StrategyView) -> pb.StrategySummary:
    shape = view.shape
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
        parameters=view_parameters_to_pb(view),
        stimuli_per_trial=shape.stimuli_per_trial,
        outcome_types=[OUTCOME_TYPE_ENUMS[t] for t in shape.outcome_types],
        outcome_names=list(shape.outcome_names),
        sweep=sweep_summary_to_pb(view.sweep) if view.sweep is not None else None,
        seed=view.seed,
        seed_from_config=view.seed_from_config,
        optimization=optimization_to_pb(view.optimization) if view.optimization is not None else None,
        resident=view.resident,
    )


_METHODS = {"fast": pb.GENERATION_METHOD_FAST, "random_search": pb.GENERATION_METHOD_RANDOM_SEARCH}
_VALUE_TYPES = {pb.VALUE_TYPE_FLOAT: "float", pb.VALUE_TYPE_INT: "int", pb.VALUE_TYPE_STR: "str", pb.VALUE_TYPE_BOOL: "bool"}


def optimization_to_pb(opt: OptimizationView) -> pb.OptimizationConfig:
    msg = pb.OptimizationConfig(
        parameter_constraints=list(opt.parameter_constraints),
        outcome_constraints=list(opt.outcome_constraints),
        tracking_metrics=list(opt.tracking_metrics),
    )
    for metric, minimize, threshold in opt.objectives:
        objective = msg.objectives.add(metric=metric, minimize=minimize)
        if threshold is not None:
            objective.threshold = threshold
    gs = msg.generation_strategy
    gs.method = _METHODS[opt.method]
    gs.max_parallelism = opt.max_parallelism
    gs.seed = opt.seed
    if opt.method == "fast":
        gs.initialization_trials = opt.initialization_trials
        gs.num_restarts, gs.raw_samples = opt.num_restarts, opt.raw_samples
    return msg


def typed_experiment_from_pb(msg: pb.ExperimentConfig) -> TypedExperiment:
    parameters = []
    for p in msg.parameters:
        kind = p.WhichOneof("kind") or ""
        if kind == "range":
            r = p.range
            parameters.append(
                TypedParameter(
                    p.name,
                    "range",
                    lower=r.lower,
                    upper=r.upper,
                    value_type=_VALUE_TYPES.get(r.value_type, ""),
                    log_scale=r.log_scale,
                    digits=r.digits if r.HasField("digits") else None,
                )
            )
        elif kind == "choice":
            values = tuple(v for v in (from_value(v) for v in p.choice.values) if v is not None)
            parameters.append(TypedParameter(p.name, "choice", values=values, is_ordered=p.choice.is_ordered))
        elif kind == "fixed":
            parameters.append(TypedParameter(p.name, "fixed", value=from_value(p.fixed.value)))
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
        parameters=to_stimulus(arm.parameters),
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
        sweep = None
        if request.HasField("sweep"):
            s = request.sweep
            order = SWEEP_ORDER_NAMES.get(s.order, "index" if s.order == pb.SWEEP_ORDER_UNSPECIFIED else f"unknown ({s.order})")
            sweep = SweepRequest(s.description_json, s.runs, order, s.seed if s.HasField("seed") else None)
        experiment = typed_experiment_from_pb(request.experiment) if request.HasField("experiment") else None
        result = await self.service.configure(
            request.config_ini, request.name, dict(request.metadata), request.request_id, sweep, experiment=experiment
        )
        view = result.strategy
        return pb.ConfigureResponse(
            strategy_id=view.strategy_id,
            parameters=view_parameters_to_pb(view),
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
            from_values(request.fixed_parameters),
            request.request_id,
            request.ttl_seconds,
        )
        return pb.AskResponse(
            trials=[trial_to_pb(t) for t in result.trials],
            is_finished=result.is_finished,
            precomputed=result.precomputed,
            timings=pb.Timings(
                fit_seconds=result.fit_seconds, generate_seconds=result.generate_seconds, wait_seconds=result.wait_seconds
            ),
            phase_index=result.phase_index,
            phase_name=result.phase_name,
            retry_after_seconds=result.retry_after_seconds,
        )

    @handles_errors
    async def Tell(self, request: pb.TellRequest, context: grpc.aio.ServicerContext) -> pb.TellResponse:
        which = request.WhichOneof("target")
        outcomes = [
            OutcomeValue(o.name, o.value, o.sem if o.HasField("sem") else None, tuple(o.series) if o.series else None)
            for o in request.outcomes
        ]
        result = await self.service.tell(
            request.strategy_id,
            outcomes,
            trial_id=request.trial_id if which == "trial_id" else None,
            stimuli=[from_values(s.values) for s in request.stimuli.stimuli] if which == "stimuli" else None,
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
            QUERY_TYPE_NAMES.get(request.query_type, "unspecified"),
            request.probability_space,
            x=[from_values(s.values) for s in request.x],
            y=request.y if request.HasField("y") else None,
            constraints=from_values(request.constraints),
            outcome=request.outcome,
        )
        return pb.QueryResponse(
            outcome=result.outcome,
            query_type=QUERY_TYPE_ENUMS[result.query_type],
            probability_space=result.probability_space,
            predictions=[
                pb.Prediction(
                    x=to_stimulus(p.x),
                    mean=p.mean,
                    variance=p.variance,
                    probability=p.probability,
                    lower=p.lower,
                    upper=p.upper,
                    level_probabilities=p.level_probabilities,
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
        return pb.ParametersResponse(parameters=view_parameters_to_pb(self.service.resume(strategy_id=request.strategy_id)))

    @handles_errors
    async def GetConfig(self, request: pb.GetConfigRequest, context: grpc.aio.ServicerContext) -> pb.GetConfigResponse:
        sections = await self.service.get_config(request.strategy_id, request.section, request.property)
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
        state = TRIAL_STATE_NAMES.get(request.state) if request.state else None
        trials = await self.service.list_trials(request.strategy_id, state)
        return pb.ListTrialsResponse(trials=[trial_to_pb(t) for t in trials])

    @handles_errors
    async def AbandonTrial(self, request: pb.AbandonTrialRequest, context: grpc.aio.ServicerContext) -> pb.AbandonTrialResponse:
        trial = await self.service.abandon_trial(request.strategy_id, request.trial_id, request.failed, request.reason)
        return pb.AbandonTrialResponse(trial=trial_to_pb(trial))

    @handles_errors
    async def AttachTrial(self, request: pb.AttachTrialRequest, context: grpc.aio.ServicerContext) -> pb.AttachTrialResponse:
        trial = await self.service.attach_trial(request.strategy_id, from_values(request.parameters.values), request.ttl_seconds, request.request_id)
        return pb.AttachTrialResponse(trial=trial_to_pb(trial))

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
        arms = await self.service.predict_metrics(request.strategy_id, [from_values(p.values) for p in request.parameters], list(request.metrics))
        return pb.PredictMetricsResponse(predictions=[arm_to_pb(a) for a in arms])

    @handles_errors
    async def GetOptimizationTrace(
        self, request: pb.GetOptimizationTraceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetOptimizationTraceResponse:
        trace = await self.service.optimization_trace(request.strategy_id)
        return pb.GetOptimizationTraceResponse(points=[pb.TracePoint(trial_id=t, value=v) for t, v in trace])

    async def ExportData(
        self, request: pb.ExportDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportDataResponse]:
        try:
            rows = await self.service.export_trials(request.strategy_id)
        except ServiceError as exc:
            await abort(context, exc)
            return
        for row in rows:
            yield pb.ExportDataResponse(
                strategy_id=row.strategy_id, strategy_name=row.strategy_name, trial=trial_to_pb(row.trial)
            )

    @handles_errors
    async def ListMissingResults(
        self, request: pb.ListMissingResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListMissingResultsResponse:
        missing = await self.service.list_missing(request.strategy_id, request.runs)
        return pb.ListMissingResultsResponse(indices=missing.indices, leased_indices=missing.leased, failed_indices=missing.failed)

    @handles_errors
    async def ExtendSweep(self, request: pb.ExtendSweepRequest, context: grpc.aio.ServicerContext) -> pb.ExtendSweepResponse:
        view = await self.service.extend_sweep(request.strategy_id, request.runs)
        return pb.ExtendSweepResponse(summary=summary_to_pb(view))

    @handles_errors
    async def GetSweepResults(
        self, request: pb.GetSweepResultsRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetSweepResultsResponse:
        window = request.WhichOneof("series_window")
        results = await self.service.sweep_results(
            request.strategy_id,
            last_n=request.last_n if window == "last_n" else None,
            last_percent=request.last_percent if window == "last_percent" else None,
            best_metric=request.best_metric,
            best_mode=SWEEP_BEST_MODE_NAMES.get(request.best_mode, "max" if request.best_mode == pb.SWEEP_BEST_MODE_UNSPECIFIED else f"unknown ({request.best_mode})"),
            include_runs=request.include_runs,
        )
        reply = pb.GetSweepResultsResponse(
            parameter_names=results.parameter_names,
            permutations=[
                pb.PermutationResult(
                    permutation=p.permutation,
                    parameters=to_stimulus(p.parameters),
                    runs_done=p.runs_done,
                    metrics=[pb.MetricSummary(name=m.name, mean=m.mean, sem=m.sem, count=m.count) for m in p.metrics],
                )
                for p in results.permutations
            ],
            runs=[
                pb.SweepRunResult(
                    index=r.index,
                    run=r.run,
                    permutation=r.permutation,
                    trial_id=r.trial_id,
                    metrics=[pb.Outcome(name=k, value=v) for k, v in r.metrics.items()],
                    series_lengths=r.series_lengths,
                )
                for r in results.runs
            ],
        )
        if results.best_permutation is not None:
            reply.best_permutation = results.best_permutation
        return reply
