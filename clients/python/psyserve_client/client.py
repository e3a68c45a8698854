"""psyserve clients: `Client` (blocking) and `AsyncClient` (asyncio), with aepsych_client's method names.

Both share psyserve_client._common.RequestBuilder for requests and replies; this file only makes calls.
Generated method wrappers are listed explicitly so that type checkers see every signature.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from . import _optimization as opt
from ._common import (
    AskResult,
    Call,
    ConfigureResult,
    FinishResult,
    InfoResult,
    MissingResults,
    Parameter,
    QueryResult,
    RequestBuilder,
    StrategySummary,
    TellResult,
    Trial,
    Value,
    parse_trial,
    translate_error,
)
from ._proto.psyserve.v1 import messages_pb2 as pb
from ._proto.psyserve.v1 import service_pb2_grpc
from .sweeps import AsyncSweepLoop, SweepLoop, SweepResults

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")
DEFAULT_ADDRESS = "127.0.0.1:50051"


def _channel_args(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes), ("grpc.max_send_message_length", max_message_bytes)]


def _credentials(root_certificates: bytes | str | None, tls: bool) -> grpc.ChannelCredentials | None:
    """TLS channel credentials (trusting `root_certificates` PEM, else the system's roots), or None
    for plaintext. The token is not part of them: it travels as call metadata on either kind."""
    if not tls and root_certificates is None:
        return None
    if isinstance(root_certificates, str):
        root_certificates = root_certificates.encode("ascii")
    return grpc.ssl_channel_credentials(root_certificates=root_certificates)


class _Base:
    def __init__(self, address: str, timeout: float | None, token: str | None) -> None:
        self.address = address
        self.timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._protocol = RequestBuilder()

    @property
    def configs(self) -> list[int]:
        """Ids of the strategies this client configured, in order."""
        return self._protocol.configs

    @property
    def config_names(self) -> dict[str, int]:
        return self._protocol.config_names

    @property
    def strategy_id(self) -> int | None:
        """The current strategy (set by configure and resume)."""
        return self._protocol.strategy_id


class Client(_Base):
    """Blocking client. `Client("127.0.0.1:50051")`; use as a context manager or call close().

    `token` is sent as `authorization: Bearer <token>` with every call (servers started with
    --auth-token); `root_certificates` (PEM bytes or text) or `tls=True` (system roots) connect over TLS.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout: float | None = 60.0,
        token: str | None = None,
        root_certificates: bytes | str | None = None,
        tls: bool = False,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        super().__init__(address, timeout, token)
        creds = _credentials(root_certificates, tls)
        opts = _channel_args(max_message_bytes)
        self._channel = grpc.secure_channel(address, creds, opts) if creds else grpc.insecure_channel(address, opts)
        self._stub = service_pb2_grpc.ExperimentServiceStub(self._channel)

    def _run(self, call: Call[T], timeout: float | None = None) -> T:
        try:
            reply = getattr(self._stub, call.method)(call.request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        return call.parse(reply)

    def export_data(self, strategy_id: int = 0) -> Iterator[tuple[int, Trial]]:
        """Stream every trial (of one strategy, or all when 0) as (strategy id, Trial)."""
        try:
            for row in self._stub.ExportData(pb.ExportDataRequest(strategy_id=strategy_id), timeout=self.timeout, metadata=self._metadata):
                yield row.strategy_id, parse_trial(row.trial)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None

    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self._channel).result(timeout=timeout)

    def finalize(self) -> None:
        """End this client's session (aepsych_client's name): closes the channel; the server keeps running."""
        self.close()

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def configure(
        self,
        config_path: str | None = None,
        config_str: str | None = None,
        config_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> ConfigureResult:
        """Create a strategy from an INI config (path or string); it becomes the current strategy."""
        return self._run(self._protocol.configure(config_path, config_str, config_name, metadata, request_id))

    def resume(self, config_id: int | None = None, config_name: str | None = None) -> StrategySummary:
        """Make a strategy (by id or name) the current one."""
        return self._run(self._protocol.resume(config_id, config_name))

    def ask(
        self,
        num_points: int = 1,
        fixed_pars: Mapping[str, Value] | None = None,
        strategy_id: int | None = None,
        request_id: str = "",
        ttl_seconds: float = 0.0,
    ) -> AskResult:
        """The next trial(s) to run, each with a trial id."""
        return self._run(self._protocol.ask(num_points, fixed_pars, strategy_id, request_id, ttl_seconds))

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
    ) -> TellResult:
        """Record an outcome for a trial id, or for an explicit stimulus (config=)."""
        return self._run(self._protocol.tell(config, outcome, model_data, trial_id, strategy_id, sem, request_id, **metadata))

    def query(
        self,
        query_type: str = "max",
        probability_space: bool = False,
        x: Mapping[str, Any] | Sequence[Mapping[str, Value]] | None = None,
        y: float | None = None,
        constraints: Mapping[str | int, Value] | None = None,
        strategy_id: int | None = None,
        outcome: str = "",
    ) -> QueryResult:
        """Ask the model: max, min, prediction or inverse (of `outcome`'s model when there are several)."""
        return self._run(self._protocol.query(query_type, probability_space, x, y, constraints, strategy_id, outcome))

    def info(self, strategy_id: int | None = None) -> InfoResult:
        """AEPsych-style summary of the strategy."""
        return self._run(self._protocol.info(strategy_id))

    def parameters(self, strategy_id: int | None = None) -> dict[str, Parameter]:
        """The strategy's parameters by name."""
        return self._run(self._protocol.parameters(strategy_id))

    def get_config(
        self, section: str | None = None, property: str | None = None, strategy_id: int | None = None
    ) -> dict[str, dict[str, str]]:
        """The config, whole or one section/property."""
        return self._run(self._protocol.get_config(section, property, strategy_id))

    def finish_strategy(self, strategy_id: int | None = None) -> FinishResult:
        """End the strategy's current phase."""
        return self._run(self._protocol.finish_strategy(strategy_id))

    def list_strategies(self) -> list[StrategySummary]:
        """Every strategy on the server."""
        return self._run(self._protocol.list_strategies())

    def list_trials(self, state: str | None = None, strategy_id: int | None = None) -> list[Trial]:
        """The strategy's trials, optionally only those in one state."""
        return self._run(self._protocol.list_trials(state, strategy_id))

    def abandon_trial(self, trial_id: int, failed: bool = False, reason: str = "", strategy_id: int | None = None) -> Trial:
        """Mark a pending trial abandoned (or failed)."""
        return self._run(self._protocol.abandon_trial(trial_id, failed, reason, strategy_id))

    def plot(
        self,
        kind: str = "auto",
        x: str | None = None,
        y: str | None = None,
        fixed: Mapping[str, Value] | None = None,
        strategy_id: int | None = None,
        resolution: int = 40,
        size: tuple[float, float] = (8, 6),
    ) -> Figure:
        """A matplotlib Figure of the strategy (needs `psyserve-client[plot]`): kind "field" (P(yes)
        over `x` and `y` with the target contour, its 95% band and the trials), "slice", "history",
        "best", "utility" (pairwise) or "auto". Parameters not plotted are held at `fixed` or their
        midpoint. Reads Info, Parameters, GetConfig, ListTrials and one prediction Query."""
        from . import plot as plots

        sid = self._protocol._sid(strategy_id)
        info = self.info(sid)
        data = plots.plot_data_from_api(
            info.summary, list(self.parameters(sid).values()), self.get_config(strategy_id=sid), self.list_trials(strategy_id=sid), info.current_strat_can_fit
        )
        planned = plots.plan(data, kind, x, y, fixed, resolution)
        predictions = None
        if planned.needs_model:
            answer = self.query("prediction", planned.probability_space, x=planned.points, strategy_id=sid)
            predictions = plots.predictions_from_query(answer.predictions)
        return plots.draw(data, planned, predictions, size)

    # ---------------------------------------------------------------- optimisation (Ax-style) experiments
    def configure_experiment(
        self, experiment: opt.ExperimentDefinition, name: str = "", metadata: Mapping[str, str] | None = None, request_id: str = ""
    ) -> ConfigureResult:
        """Create a strategy from a typed (Ax-style) experiment; it becomes the current strategy."""
        result = self._run(opt.configure_experiment(experiment, name, metadata, request_id))
        self._protocol.strategy_id = result.strategy_id
        return result

    def tell_metrics(
        self, trial_id: int, raw_data: Any, metadata: Mapping[str, Any] | None = None, sample_size: int | None = None, strategy_id: int | None = None
    ) -> TellResult:
        """Ax's raw_data for a trial: mean, (mean, sem) or {metric: mean | (mean, sem)}."""
        return self._run(opt.tell_metrics(self._protocol._sid(strategy_id), trial_id, raw_data, metadata, sample_size))

    def attach_trial(self, parameters: Mapping[str, Value], ttl_seconds: float = 0.0, strategy_id: int | None = None) -> Trial:
        """A pending trial at given parameters."""
        return self._run(opt.attach_trial(self._protocol._sid(strategy_id), parameters, ttl_seconds))

    def best_parameters(self, use_model: bool = True, strategy_id: int | None = None) -> opt.ArmEstimate | None:
        """The best feasible completed trial (model-predicted in-sample, or observed)."""
        return self._run(opt.best_parameters(self._protocol._sid(strategy_id), use_model))

    def pareto_front(self, use_model: bool = True, strategy_id: int | None = None) -> list[opt.ArmEstimate]:
        """The feasible non-dominated completed trials."""
        return self._run(opt.pareto_front(self._protocol._sid(strategy_id), use_model))

    def predict_metrics(
        self, parameters: Sequence[Mapping[str, Value]], metrics: Sequence[str] = (), strategy_id: int | None = None
    ) -> list[opt.ArmEstimate]:
        """Model mean and SEM of every (or the listed) metric at each parameterisation."""
        return self._run(opt.predict_metrics(self._protocol._sid(strategy_id), parameters, metrics))

    def optimization_trace(self, strategy_id: int | None = None) -> list[tuple[int, float]]:
        """(trial id, best feasible objective so far / hypervolume) per completed trial."""
        return self._run(opt.optimization_trace(self._protocol._sid(strategy_id)))
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
    ) -> ConfigureResult:
        """Create a PyExpUtils-style sweep (a dict with `metaParameters`, or its JSON text) of
        `runs` runs, handed out in index order or shuffled run by run (`order="shuffle"`, `seed`)."""
        return self._run(self._protocol.configure_sweep(description, runs, order, seed, config_name, metadata, request_id))

    def list_missing(self, runs: int = 0, strategy_id: int | None = None) -> MissingResults:
        """Indices without a result for `runs` runs (0: the sweep's runs); PyExpUtils' listMissingResults."""
        return self._run(self._protocol.list_missing(runs, strategy_id))

    def extend_sweep(self, runs: int, strategy_id: int | None = None) -> StrategySummary:
        """Raise the sweep's number of runs; only the new indices are handed out."""
        return self._run(self._protocol.extend_sweep(runs, strategy_id))

    def sweep_results(
        self,
        last_n: int | None = None,
        last_percent: float | None = None,
        best_metric: str = "",
        best_mode: str = "max",
        strategy_id: int | None = None,
    ) -> SweepResults:
        """Per-permutation mean and SEM of every metric (series over their last n steps or last p
        percent), and per-(index, run) rows; `.frame()`, `.split_over()`, `.slice_over()`, `.to_csv()`."""
        data = self._run(self._protocol.sweep_results(last_n, last_percent, best_metric, best_mode, True, strategy_id))
        return SweepResults(data, data.parameter_names)

    def sweep(
        self, strategy_id: int | None = None, ttl: float = 60.0, poll_seconds: float = 1.0, max_wait_seconds: float | None = None
    ) -> SweepLoop:
        """The worker loop: `for trial in client.sweep(sid, ttl=60): trial.report({...})`."""
        return SweepLoop(self, self._protocol._sid(strategy_id), ttl, poll_seconds, max_wait_seconds)


class AsyncClient(_Base):
    """asyncio client with the same methods as Client, as coroutines. Use `async with`.

    `token`, `root_certificates` and `tls` work as for Client.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        timeout: float | None = 60.0,
        token: str | None = None,
        root_certificates: bytes | str | None = None,
        tls: bool = False,
        max_message_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        super().__init__(address, timeout, token)
        creds = _credentials(root_certificates, tls)
        opts = _channel_args(max_message_bytes)
        self._channel = grpc.aio.secure_channel(address, creds, opts) if creds else grpc.aio.insecure_channel(address, opts)
        self._stub = service_pb2_grpc.ExperimentServiceStub(self._channel)

    async def _run(self, call: Call[T], timeout: float | None = None) -> T:
        try:
            reply = await getattr(self._stub, call.method)(call.request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None
        return call.parse(reply)

    async def export_data(self, strategy_id: int = 0) -> AsyncIterator[tuple[int, Trial]]:
        """Stream every trial (of one strategy, or all when 0) as (strategy id, Trial)."""
        try:
            async for row in self._stub.ExportData(pb.ExportDataRequest(strategy_id=strategy_id), timeout=self.timeout, metadata=self._metadata):
                yield row.strategy_id, parse_trial(row.trial)
        except grpc.RpcError as exc:
            raise translate_error(exc) from None

    async def wait_ready(self, timeout: float = 10.0) -> None:
        import asyncio

        await asyncio.wait_for(self._channel.channel_ready(), timeout)

    async def finalize(self) -> None:
        """End this client's session: closes the channel; the server keeps running."""
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def configure(
        self,
        config_path: str | None = None,
        config_str: str | None = None,
        config_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> ConfigureResult:
        """Create a strategy from an INI config (path or string); it becomes the current strategy."""
        return await self._run(self._protocol.configure(config_path, config_str, config_name, metadata, request_id))

    async def resume(self, config_id: int | None = None, config_name: str | None = None) -> StrategySummary:
        """Make a strategy (by id or name) the current one."""
        return await self._run(self._protocol.resume(config_id, config_name))

    async def ask(
        self,
        num_points: int = 1,
        fixed_pars: Mapping[str, Value] | None = None,
        strategy_id: int | None = None,
        request_id: str = "",
        ttl_seconds: float = 0.0,
    ) -> AskResult:
        """The next trial(s) to run, each with a trial id."""
        return await self._run(self._protocol.ask(num_points, fixed_pars, strategy_id, request_id, ttl_seconds))

    async def tell(
        self,
        config: Mapping[str, Any] | None = None,
        outcome: Any = None,
        model_data: bool = True,
        trial_id: int | None = None,
        strategy_id: int | None = None,
        sem: float | None = None,
        request_id: str = "",
        **metadata: Any,
    ) -> TellResult:
        """Record an outcome for a trial id, or for an explicit stimulus (config=)."""
        return await self._run(
            self._protocol.tell(config, outcome, model_data, trial_id, strategy_id, sem, request_id, **metadata)
        )

    async def query(
        self,
        query_type: str = "max",
        probability_space: bool = False,
        x: Mapping[str, Any] | Sequence[Mapping[str, Value]] | None = None,
        y: float | None = None,
        constraints: Mapping[str | int, Value] | None = None,
        strategy_id: int | None = None,
        outcome: str = "",
    ) -> QueryResult:
        """Ask the model: max, min, prediction or inverse (of `outcome`'s model when there are several)."""
        return await self._run(
            self._protocol.query(query_type, probability_space, x, y, constraints, strategy_id, outcome)
        )

    async def info(self, strategy_id: int | None = None) -> InfoResult:
        """AEPsych-style summary of the strategy."""
        return await self._run(self._protocol.info(strategy_id))

    async def parameters(self, strategy_id: int | None = None) -> dict[str, Parameter]:
        """The strategy's parameters by name."""
        return await self._run(self._protocol.parameters(strategy_id))

    async def get_config(
        self, section: str | None = None, property: str | None = None, strategy_id: int | None = None
    ) -> dict[str, dict[str, str]]:
        """The config, whole or one section/property."""
        return await self._run(self._protocol.get_config(section, property, strategy_id))

    async def finish_strategy(self, strategy_id: int | None = None) -> FinishResult:
        """End the strategy's current phase."""
        return await self._run(self._protocol.finish_strategy(strategy_id))

    async def list_strategies(self) -> list[StrategySummary]:
        """Every strategy on the server."""
        return await self._run(self._protocol.list_strategies())

    async def list_trials(self, state: str | None = None, strategy_id: int | None = None) -> list[Trial]:
        """The strategy's trials, optionally only those in one state."""
        return await self._run(self._protocol.list_trials(state, strategy_id))

    async def abandon_trial(self, trial_id: int, failed: bool = False, reason: str = "", strategy_id: int | None = None) -> Trial:
        """Mark a pending trial abandoned (or failed)."""
        return await self._run(self._protocol.abandon_trial(trial_id, failed, reason, strategy_id))

    async def plot(
        self,
        kind: str = "auto",
        x: str | None = None,
        y: str | None = None,
        fixed: Mapping[str, Value] | None = None,
        strategy_id: int | None = None,
        resolution: int = 40,
        size: tuple[float, float] = (8, 6),
    ) -> Figure:
        """As Client.plot (the drawing itself runs in the calling thread)."""
        from . import plot as plots

        sid = self._protocol._sid(strategy_id)
        info = await self.info(sid)
        data = plots.plot_data_from_api(
            info.summary,
            list((await self.parameters(sid)).values()),
            await self.get_config(strategy_id=sid),
            await self.list_trials(strategy_id=sid),
            info.current_strat_can_fit,
        )
        planned = plots.plan(data, kind, x, y, fixed, resolution)
        predictions = None
        if planned.needs_model:
            answer = await self.query("prediction", planned.probability_space, x=planned.points, strategy_id=sid)
            predictions = plots.predictions_from_query(answer.predictions)
        return plots.draw(data, planned, predictions, size)

    # ---------------------------------------------------------------- optimisation (Ax-style) experiments
    async def configure_experiment(
        self, experiment: opt.ExperimentDefinition, name: str = "", metadata: Mapping[str, str] | None = None, request_id: str = ""
    ) -> ConfigureResult:
        """Create a strategy from a typed (Ax-style) experiment; it becomes the current strategy."""
        result = await self._run(opt.configure_experiment(experiment, name, metadata, request_id))
        self._protocol.strategy_id = result.strategy_id
        return result

    async def tell_metrics(
        self, trial_id: int, raw_data: Any, metadata: Mapping[str, Any] | None = None, sample_size: int | None = None, strategy_id: int | None = None
    ) -> TellResult:
        """Ax's raw_data for a trial: mean, (mean, sem) or {metric: mean | (mean, sem)}."""
        return await self._run(opt.tell_metrics(self._protocol._sid(strategy_id), trial_id, raw_data, metadata, sample_size))

    async def attach_trial(self, parameters: Mapping[str, Value], ttl_seconds: float = 0.0, strategy_id: int | None = None) -> Trial:
        """A pending trial at given parameters."""
        return await self._run(opt.attach_trial(self._protocol._sid(strategy_id), parameters, ttl_seconds))

    async def best_parameters(self, use_model: bool = True, strategy_id: int | None = None) -> opt.ArmEstimate | None:
        """The best feasible completed trial (model-predicted in-sample, or observed)."""
        return await self._run(opt.best_parameters(self._protocol._sid(strategy_id), use_model))

    async def pareto_front(self, use_model: bool = True, strategy_id: int | None = None) -> list[opt.ArmEstimate]:
        """The feasible non-dominated completed trials."""
        return await self._run(opt.pareto_front(self._protocol._sid(strategy_id), use_model))

    async def predict_metrics(
        self, parameters: Sequence[Mapping[str, Value]], metrics: Sequence[str] = (), strategy_id: int | None = None
    ) -> list[opt.ArmEstimate]:
        """Model mean and SEM of every (or the listed) metric at each parameterisation."""
        return await self._run(opt.predict_metrics(self._protocol._sid(strategy_id), parameters, metrics))

    async def optimization_trace(self, strategy_id: int | None = None) -> list[tuple[int, float]]:
        """(trial id, best feasible objective so far / hypervolume) per completed trial."""
        return await self._run(opt.optimization_trace(self._protocol._sid(strategy_id)))
    # ------------------------------------------------------------------ parameter sweeps
    async def configure_sweep(
        self,
        description: Mapping[str, Any] | str,
        runs: int = 1,
        order: str = "index",
        seed: int | None = None,
        config_name: str | None = None,
        metadata: Mapping[str, str] | None = None,
        request_id: str = "",
    ) -> ConfigureResult:
        """Create a PyExpUtils-style sweep (see Client.configure_sweep)."""
        return await self._run(self._protocol.configure_sweep(description, runs, order, seed, config_name, metadata, request_id))

    async def list_missing(self, runs: int = 0, strategy_id: int | None = None) -> MissingResults:
        """Indices without a result for `runs` runs (0: the sweep's runs)."""
        return await self._run(self._protocol.list_missing(runs, strategy_id))

    async def extend_sweep(self, runs: int, strategy_id: int | None = None) -> StrategySummary:
        """Raise the sweep's number of runs; only the new indices are handed out."""
        return await self._run(self._protocol.extend_sweep(runs, strategy_id))

    async def sweep_results(
        self,
        last_n: int | None = None,
        last_percent: float | None = None,
        best_metric: str = "",
        best_mode: str = "max",
        strategy_id: int | None = None,
    ) -> SweepResults:
        """Per-permutation results (see Client.sweep_results)."""
        data = await self._run(self._protocol.sweep_results(last_n, last_percent, best_metric, best_mode, True, strategy_id))
        return SweepResults(data, data.parameter_names)

    def sweep(
        self, strategy_id: int | None = None, ttl: float = 60.0, poll_seconds: float = 1.0, max_wait_seconds: float | None = None
    ) -> AsyncSweepLoop:
        """The asyncio worker loop: `async for trial in client.sweep(sid, ttl=60): await trial.report({...})`."""
        return AsyncSweepLoop(self, self._protocol._sid(strategy_id), ttl, poll_seconds, max_wait_seconds)
