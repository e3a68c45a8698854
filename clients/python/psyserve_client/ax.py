"""AxClient: Ax's Service API (names, arguments, return shapes) served by a psyserve server.

`from psyserve_client.ax import AxClient, ObjectiveProperties` runs an Ax Service-API loop
unchanged against the server at `address` (default: $PSYSERVE_ADDRESS or 127.0.0.1:50051). Every
call is an RPC, so many processes can drive one experiment and a server restart loses nothing;
`load_experiment_from_database(name)` reconnects by name. Ax itself is not needed. Trial indices
count from 0 as in Ax (psyserve trial id - 1). Holds no experiment state beyond the strategy id.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _optimization as opt
from ._common import Trial, Value
from ._proto.psyserve.v1 import messages_pb2 as pb
from .client import Client

__all__ = ["AxClient", "GenerationStrategy", "ObjectiveProperties"]

GenerationStrategy = opt.GenerationStrategy
TParameterization = dict[str, Value]
TModelPredictArm = tuple[dict[str, float], dict[str, dict[str, float]]]
_STATUS = {"pending": "RUNNING", "completed": "COMPLETED", "failed": "FAILED", "abandoned": "ABANDONED"}


@dataclass(frozen=True)
class ObjectiveProperties:
    """Ax's ObjectiveProperties: minimise or maximise, and an optional (multi-objective) threshold."""

    minimize: bool
    threshold: float | None = None


class AxClient:
    """Ax's AxClient over gRPC. Ax-only arguments that change nothing here (db_settings, torch_device,
    verbose_logging, ...) are accepted and ignored; `random_seed` seeds the generation strategy."""

    def __init__(
        self,
        generation_strategy: opt.GenerationStrategy | None = None,
        db_settings: Any = None,
        enforce_sequential_optimization: bool = True,
        random_seed: int | None = None,
        torch_device: Any = None,
        verbose_logging: bool = True,
        suppress_storage_errors: bool = False,
        early_stopping_strategy: Any = None,
        global_stopping_strategy: Any = None,
        *,
        address: str | None = None,
        token: str | None = None,
        timeout: float | None = 600.0,
        client: Client | None = None,
    ) -> None:
        if generation_strategy is not None and not isinstance(generation_strategy, opt.GenerationStrategy):
            raise TypeError("generation_strategy: pass psyserve_client.ax.GenerationStrategy(method=..., initialization_trials=..., ...)")
        if early_stopping_strategy is not None or global_stopping_strategy is not None:
            raise ValueError("early and global stopping strategies are not supported")
        self._client = client or Client(address or os.environ.get("PSYSERVE_ADDRESS", "127.0.0.1:50051"), timeout=timeout, token=token)
        self._generation_strategy = generation_strategy
        self._random_seed = random_seed
        self._strategy_id: int | None = None
        self._summary: pb.StrategySummary | None = None
        self.experiment_name = ""

    # ------------------------------------------------------------------ experiment
    def create_experiment(
        self,
        parameters: Sequence[Mapping[str, Any]],
        name: str | None = None,
        description: str | None = None,
        owners: list[str] | None = None,
        objectives: Mapping[str, ObjectiveProperties] | None = None,
        parameter_constraints: Sequence[str] | None = None,
        outcome_constraints: Sequence[str] | None = None,
        status_quo: Any = None,
        overwrite_existing_experiment: bool = False,
        experiment_type: str | None = None,
        tracking_metric_names: Sequence[str] | None = None,
        choose_generation_strategy_kwargs: Mapping[str, Any] | None = None,
        support_intermediate_data: bool = False,
        immutable_search_space_and_opt_config: bool = True,
        is_test: bool = False,
        objective_name: str | None = None,
        minimize: bool | None = None,
    ) -> None:
        """Ax's create_experiment: `objectives={"m": ObjectiveProperties(minimize=True)}` or the older
        `objective_name="m", minimize=True` (default objective "objective", maximised)."""
        if status_quo is not None:
            raise ValueError("status_quo is not supported (nor are relative outcome constraints)")
        if overwrite_existing_experiment:
            raise ValueError("overwrite_existing_experiment: psyserve never overwrites an experiment; choose a new name")
        if objectives is not None and (objective_name is not None or minimize is not None):
            raise ValueError("pass objectives= or objective_name=/minimize=, not both")
        if objectives is None:
            objectives = {objective_name or "objective": ObjectiveProperties(minimize=bool(minimize))}
        gs = self._generation_strategy or opt.GenerationStrategy()
        kwargs = dict(choose_generation_strategy_kwargs or {})
        known = {"num_initialization_trials", "max_parallelism_cap", "max_parallelism_override", "random_seed", "num_restarts", "raw_samples", "method"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"choose_generation_strategy_kwargs: unsupported key(s) {unknown} (supported: {sorted(known)})")
        parallelism = kwargs.get("max_parallelism_override", kwargs.get("max_parallelism_cap"))
        seed = kwargs.get("random_seed", self._random_seed if self._random_seed is not None else gs.seed)
        gs = opt.GenerationStrategy(
            method=kwargs.get("method", gs.method),
            initialization_trials=kwargs.get("num_initialization_trials", gs.initialization_trials),
            seed=seed,
            max_parallelism=int(parallelism) if parallelism is not None else gs.max_parallelism,
            num_restarts=int(kwargs.get("num_restarts", gs.num_restarts)),
            raw_samples=int(kwargs.get("raw_samples", gs.raw_samples)),
        )
        definition = opt.ExperimentDefinition(
            parameters=list(parameters),
            objectives=[opt.Objective(m, p.minimize, p.threshold) for m, p in objectives.items()],
            parameter_constraints=list(parameter_constraints or ()),
            outcome_constraints=list(outcome_constraints or ()),
            tracking_metrics=list(tracking_metric_names or ()),
            generation_strategy=gs,
        )
        metadata = {"description": description} if description else {}
        result = self._client._run(opt.configure_experiment(definition, name or "", metadata))
        self._attach(result.strategy_id, name or "")

    def load_experiment_from_database(self, experiment_name: str, choose_generation_strategy: bool = False) -> None:
        """Reconnect to an experiment by name (the server's journal is the database)."""
        reply = self._client._run(_resume(experiment_name))
        self._strategy_id, self._summary, self.experiment_name = reply.strategy_id, reply, experiment_name

    load_experiment = load_experiment_from_database

    def _attach(self, strategy_id: int, name: str) -> None:
        self._strategy_id, self.experiment_name = strategy_id, name
        self._summary = self._client._run(_resume_id(strategy_id))

    @property
    def strategy_id(self) -> int:
        if self._strategy_id is None:
            raise ValueError("no experiment: call create_experiment() or load_experiment_from_database() first")
        return self._strategy_id

    @property
    def _optimization(self) -> pb.OptimizationConfig:
        if self._summary is None:
            self._summary = self._client._run(_resume_id(self.strategy_id))
        return self._summary.optimization

    @property
    def objective_names(self) -> list[str]:
        return [o.metric for o in self._optimization.objectives]

    @property
    def metric_names(self) -> list[str]:
        names = self.objective_names
        for text in self._optimization.outcome_constraints:
            metric = text.split()[0]
            if metric not in names:
                names.append(metric)
        return names + [m for m in self._optimization.tracking_metrics if m not in names]

    # ------------------------------------------------------------------ trials
    def get_next_trial(
        self, ttl_seconds: int | None = None, force: bool = False, fixed_features: Mapping[str, Value] | None = None
    ) -> tuple[TParameterization, int]:
        """The next parameterisation and its trial index."""
        trials = self._ask(1, ttl_seconds, fixed_features)
        return dict(trials[0].params), trials[0].trial_id - 1

    def get_next_trials(
        self, max_trials: int, ttl_seconds: int | None = None, fixed_features: Mapping[str, Value] | None = None
    ) -> tuple[dict[int, TParameterization], bool]:
        """Up to max_trials parameterisations by trial index (fewer when max_parallelism allows
        fewer), and whether the generation strategy is complete."""
        limit = self._optimization.generation_strategy.max_parallelism
        if limit:
            pending = len(self._client.list_trials("pending", strategy_id=self.strategy_id))
            max_trials = min(max_trials, limit - pending)
        if max_trials <= 0:
            return {}, False
        trials = self._ask(max_trials, ttl_seconds, fixed_features)
        return {t.trial_id - 1: dict(t.params) for t in trials}, False

    def _ask(self, n: int, ttl_seconds: float | None, fixed_features: Mapping[str, Value] | None) -> list[Trial]:
        result = self._client.ask(n, fixed_pars=fixed_features, strategy_id=self.strategy_id, ttl_seconds=float(ttl_seconds or 0))
        return result.trials

    def complete_trial(
        self, trial_index: int, raw_data: Any, metadata: Mapping[str, Any] | None = None, sample_size: int | None = None
    ) -> None:
        """raw_data: mean, (mean, sem), or {metric: mean | (mean, sem)}; sem 0 = noiseless, None = unknown."""
        default = self.objective_names[0] if len(self.objective_names) == 1 else ""
        self._client._run(opt.tell_metrics(self.strategy_id, trial_index + 1, raw_data, metadata, sample_size, default))

    def update_running_trial_with_intermediate_data(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("intermediate data is not supported")

    def log_trial_failure(self, trial_index: int, metadata: Mapping[str, Any] | None = None) -> None:
        reason = ", ".join(f"{k}={v}" for k, v in (metadata or {}).items())
        self._client.abandon_trial(trial_index + 1, failed=True, reason=reason, strategy_id=self.strategy_id)

    def abandon_trial(self, trial_index: int, reason: str | None = None) -> None:
        self._client.abandon_trial(trial_index + 1, failed=False, reason=reason or "", strategy_id=self.strategy_id)

    def attach_trial(
        self, parameters: Mapping[str, Value], ttl_seconds: int | None = None, run_metadata: Mapping[str, Any] | None = None, arm_name: str | None = None
    ) -> tuple[TParameterization, int]:
        """A trial at given parameters (complete it like any other)."""
        trial = self._client._run(opt.attach_trial(self.strategy_id, parameters, float(ttl_seconds or 0)))
        return dict(trial.params), trial.trial_id - 1

    def get_trial_parameters(self, trial_index: int) -> TParameterization:
        for t in self._client.list_trials(strategy_id=self.strategy_id):
            if t.trial_id == trial_index + 1:
                return dict(t.params)
        raise ValueError(f"trial {trial_index} not found")

    # ------------------------------------------------------------------ read-outs
    @staticmethod
    def _predict_arm(arm: opt.ArmEstimate) -> TModelPredictArm:
        cov = {m: {n: (arm.sems[m] ** 2 if m == n else 0.0) for n in arm.means} for m in arm.means}
        return dict(arm.means), cov

    def get_best_trial(self, optimization_config: Any = None, trial_indices: Any = None, use_model_predictions: bool = True) -> tuple[int, TParameterization, TModelPredictArm] | None:
        best = self._client._run(opt.best_parameters(self.strategy_id, use_model_predictions))
        if best is None:
            return None
        return best.trial_id - 1, dict(best.parameters), self._predict_arm(best)

    def get_best_parameters(
        self, optimization_config: Any = None, trial_indices: Any = None, use_model_predictions: bool = True
    ) -> tuple[TParameterization, TModelPredictArm] | None:
        """(parameters, (means, covariances)) of the best feasible completed trial, model-predicted
        (in-sample) by default; None when no completed trial is feasible."""
        best = self.get_best_trial(use_model_predictions=use_model_predictions)
        return None if best is None else (best[1], best[2])

    def get_pareto_optimal_parameters(
        self, optimization_config: Any = None, trial_indices: Any = None, use_model_predictions: bool = True
    ) -> dict[int, tuple[TParameterization, TModelPredictArm]]:
        front = self._client._run(opt.pareto_front(self.strategy_id, use_model_predictions))
        return {a.trial_id - 1: (dict(a.parameters), self._predict_arm(a)) for a in front}

    def get_model_predictions_for_parameterizations(
        self, parameterizations: Sequence[Mapping[str, Value]], metric_names: Sequence[str] | None = None
    ) -> list[dict[str, tuple[float, float]]]:
        arms = self._client._run(opt.predict_metrics(self.strategy_id, parameterizations, list(metric_names or ())))
        return [{m: (a.means[m], a.sems[m]) for m in a.means} for a in arms]

    def get_trace(self, optimization_config: Any = None) -> list[float]:
        """Best feasible objective so far (hypervolume for several objectives) per completed trial."""
        return [v for _, v in self._client._run(opt.optimization_trace(self.strategy_id))]

    def get_optimization_trace(self, objective_optimum: float | None = None) -> list[float]:
        """Ax returns a plot of this; psyserve returns its data: get_trace()."""
        return self.get_trace()

    def get_trials_data_frame(self) -> Any:
        """One row per trial: trial_index, arm_name, trial_status, generation_method, the metrics'
        means and the parameters (needs pandas: pip install 'psyserve-client[pandas]')."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("get_trials_data_frame needs pandas: pip install 'psyserve-client[pandas]'") from exc
        rows = []
        for t in self._client.list_trials(strategy_id=self.strategy_id):
            row: dict[str, Any] = {
                "trial_index": t.trial_id - 1,
                "arm_name": f"{t.trial_id - 1}_0",
                "trial_status": _STATUS.get(t.state, t.state.upper()),
                "generation_method": "Manual" if t.phase_name == "" else ("Sobol" if t.phase_name == "sobol" else "BoTorch" if t.phase_name == "botorch" else t.phase_name),
            }
            row.update({o.name: o.value for o in t.outcomes})
            row.update(t.params)
            rows.append(row)
        frame = pd.DataFrame(rows)
        for metric in self.metric_names:
            if metric not in frame:
                frame[metric] = math.nan
        return frame


def _resume(name: str) -> opt.Call[pb.StrategySummary]:
    return opt.Call("Resume", pb.ResumeRequest(name=name), lambda r: r.summary)


def _resume_id(strategy_id: int) -> opt.Call[pb.StrategySummary]:
    return opt.Call("Resume", pb.ResumeRequest(strategy_id=strategy_id), lambda r: r.summary)
