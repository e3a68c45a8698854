"""One strategy's in-memory state: its trials, phase rules and the cheap (non-model) generators.

State changes only through `apply(event)`, so a live request and a journal replay take the same
path. Knows nothing of SQL, asyncio, the compute pool or transports.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import ExperimentSpec, PhaseSpec
from .journal import Event
from .params import OutcomeValue, Stimulus
from .quasirandom import TorchSobol

PENDING, COMPLETED, FAILED, ABANDONED = "pending", "completed", "failed", "abandoned"

__all__ = ["ABANDONED", "COMPLETED", "FAILED", "PENDING", "OutcomeValue", "Strategy", "TrialRecord"]


@dataclass
class TrialRecord:
    trial_id: int
    phase_index: int
    stimuli: list[Stimulus]
    asked_at: float
    state: str = PENDING
    outcomes: list[OutcomeValue] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    told_at: float | None = None
    model_data: bool = True
    lease_expires_at: float | None = None
    asked: bool = True  # False for trials told with explicit stimuli
    attached: bool = False  # added at given parameters (Ax's attach_trial), not generated
    sample_size: int | None = None
    # sweeps: the index handed out, its run (index div permutations) and permutation (index mod permutations)
    sweep_index: int | None = None
    sweep_run: int | None = None
    sweep_permutation: int | None = None


class Strategy:
    """A sequence of phases (AEPsych's strategy_names) over one parameter space."""

    def __init__(
        self,
        strategy_id: int,
        name: str,
        spec: ExperimentSpec,
        config_ini: str,
        metadata: dict[str, str],
        created_at: float,
        seed: int,
    ) -> None:
        self.strategy_id = strategy_id
        self.name = name
        self.spec = spec
        self.config_ini = config_ini
        self.metadata = metadata
        self.created_at = created_at
        self.seed = seed
        self.lock = asyncio.Lock()
        self.trials: dict[int, TrialRecord] = {}
        self.next_trial_id = 1
        self.phase_index = 0
        self.phase_asks = [0] * len(spec.phases)
        self.phase_finished_by_request = [False] * len(spec.phases)
        self.model_data_points = 0
        self.outcome_counts: Counter[float] = Counter()
        self.completed = 0
        self.ask_requests: dict[str, list[int]] = {}
        self.tell_requests: dict[str, int] = {}
        self._sobol: dict[int, tuple[TorchSobol, int]] = {}
        # constrained spaces: per phase, the Sobol engine and the feasible points drawn so far
        self._feasible_sobol: dict[int, tuple[TorchSobol, list[np.ndarray]]] = {}
        # stimuli of trials whose lease expired, handed out again by the next asks of their phase
        self.reissue: dict[int, tuple[int, list[Stimulus]]] = {}

    # ---------------------------------------------------------------- phase rules
    @property
    def phase(self) -> PhaseSpec:
        return self.spec.phases[self.phase_index]

    def phase_finished(self, index: int, extra_outcome: float | None = None) -> bool:
        """AEPsych's stopping rules for phase `index`, on the current counts (plus one hypothetical
        model-data outcome, when `extra_outcome` is given: used to look one tell ahead)."""
        if self.phase_finished_by_request[index]:
            return True
        phase = self.spec.phases[index]
        if phase.run_indefinitely:
            return False
        asks = self.phase_asks[index]
        if phase.max_asks is not None and asks >= phase.max_asks:
            return True
        if not phase.has_stopping_rule:
            return False
        points = self.model_data_points + (extra_outcome is not None)
        if phase.min_asks is not None and asks < phase.min_asks:
            return False
        if phase.min_total_tells is not None and points < phase.min_total_tells:
            return False
        needed = phase.min_total_outcome_occurrences
        if needed and self.spec.binary_outcome:
            zeros = self.outcome_counts[0.0] + (extra_outcome == 0.0)
            ones = self.outcome_counts[1.0] + (extra_outcome == 1.0)
            if zeros < needed or ones < needed:
                return False
        return True

    @property
    def has_model_phase(self) -> bool:
        return any(p.is_model_based for p in self.spec.phases)

    @property
    def is_finished(self) -> bool:
        last = len(self.spec.phases) - 1
        return self.phase_index == last and self.phase_finished(last)

    def phase_for_next_ask(self, extra_outcome: float | None = None) -> int:
        """The phase the next ask draws from: move past finished phases (never past the last)."""
        index = self.phase_index
        while index < len(self.spec.phases) - 1 and self.phase_finished(index, extra_outcome):
            index += 1
        return index

    def can_fit(self) -> bool:
        """A model can be fit once there is any model data (with one outcome class only, the
        classification model is dominated by its prior, but it is still a model)."""
        return self.model_data_points > 0

    def expired_leases(self, now: float) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.state == PENDING and t.lease_expires_at is not None and t.lease_expires_at <= now]

    def next_lease_expiry(self) -> float | None:
        times = [t.lease_expires_at for t in self.trials.values() if t.state == PENDING and t.lease_expires_at is not None]
        return min(times) if times else None

    @property
    def parameter_names(self) -> list[str]:
        """The names of a stimulus' values, in config order (export columns)."""
        return self.spec.space.names

    @property
    def outcome_names(self) -> list[str]:
        """The names trials are told under, in order (export columns)."""
        return list(self.spec.outcome_names)

    @property
    def pending(self) -> list[TrialRecord]:
        return [t for t in self.trials.values() if t.state == PENDING]

    # ---------------------------------------------------------------- cheap generators
    def generate_unit(self, phase_index: int, n: int) -> np.ndarray:
        """n trials from a non-model phase: n x stimuli_per_trial x d points of the unit cube."""
        phase = self.spec.phases[phase_index]
        k, d = self.spec.stimuli_per_trial, self.spec.space.dim
        start = self.phase_asks[phase_index]
        optimization = self.spec.optimization
        if optimization is not None and optimization.parameter_constraints and k == 1:
            return self._feasible_unit(phase_index, start, n).reshape(n, k, d)
        if phase.generator == "SobolGenerator":
            engine, position = self._sobol.get(phase_index, (None, -1))
            if engine is None or position != start:
                # torch's scrambled Sobol sequence (AEPsych's and Ax's), k * d-dimensional for k stimuli
                engine = TorchSobol(k * d, phase.seed)
                if start:
                    engine.fast_forward(start)
            u = engine.random(n)
            self._sobol[phase_index] = (engine, start + n)
            return u.reshape(n, k, d)
        if phase.generator == "RandomGenerator":
            return np.stack([np.random.default_rng([phase.seed, start + i]).random((k, d)) for i in range(n)])
        raise ValueError(f"phase {phase.name!r} ({phase.generator}) is not a cheap generator")

    def _feasible_unit(self, phase_index: int, start: int, n: int) -> np.ndarray:
        """Asks start..start+n-1 of a phase under linear parameter constraints: the feasible points
        of the phase's quasi-random sequence, in order (rejection; the same after a replay)."""
        phase = self.spec.phases[phase_index]
        optimization = self.spec.optimization
        assert optimization is not None
        space, d = self.spec.space, self.spec.space.dim
        if phase.generator == "RandomGenerator":
            out = []
            for i in range(start, start + n):
                rng = np.random.default_rng([phase.seed, i])
                for _ in range(100_000):
                    u = rng.random(d)
                    if optimization.feasible(space.from_unit(u)):
                        break
                else:
                    raise ValueError("the parameter constraints leave too little of the space to sample")
                out.append(u)
            return np.array(out)
        engine, found = self._feasible_sobol.get(phase_index, (None, []))
        if engine is None:
            engine = TorchSobol(d, phase.seed)
        drawn = 0
        while len(found) < start + n:
            if drawn > 1_000_000:
                raise ValueError("the parameter constraints leave too little of the space to sample")
            block = engine.random(1024)
            drawn += len(block)
            found.extend(u for u in block if optimization.feasible(space.from_unit(u)))
        self._feasible_sobol[phase_index] = (engine, found)
        return np.array(found[start : start + n])

    def manual_stimuli(self, phase_index: int, n: int) -> list[list[Stimulus]]:
        """The next n listed points of a ManualGenerator phase (raw stimuli)."""
        phase = self.spec.phases[phase_index]
        points = phase.manual_points
        order = np.arange(len(points))
        if phase.shuffle:
            order = np.random.default_rng(phase.seed).permutation(len(points))
        start = self.phase_asks[phase_index]
        names = self.spec.space.names
        out = []
        for i in range(start, start + n):
            point = points[int(order[i % len(points)])]
            out.append([dict(zip(names, stim)) for stim in point])
        return out

    # ---------------------------------------------------------------- the only mutator
    def apply(self, event: Event) -> None:
        """Apply one journaled event (live or during replay)."""
        p = event.payload
        if event.kind == "ask":
            assert event.trial_id is not None
            phase_index = int(p["phase_index"])
            trial = TrialRecord(
                trial_id=event.trial_id,
                phase_index=phase_index,
                stimuli=[dict(s) for s in p["stimuli"]],
                asked_at=event.created_at,
                lease_expires_at=p.get("lease_expires_at"),
            )
            self.trials[trial.trial_id] = trial
            self.next_trial_id = max(self.next_trial_id, trial.trial_id + 1)
            self.phase_index = max(self.phase_index, phase_index)
            if p.get("attached"):
                trial.attached = True  # not drawn from the phase: its asks do not count it
            elif p.get("reissue_of") is not None:
                self.reissue.pop(int(p["reissue_of"]), None)  # a point handed out again is not a new ask
            else:
                self.phase_asks[phase_index] += 1
            if p.get("request_id"):
                self.ask_requests.setdefault(p["request_id"], []).append(trial.trial_id)
        elif event.kind == "tell":
            assert event.trial_id is not None
            trial_or_none = self.trials.get(event.trial_id)
            if trial_or_none is None:  # a stimulus told without an ask
                trial = TrialRecord(
                    trial_id=event.trial_id,
                    phase_index=int(p["phase_index"]),
                    stimuli=[dict(s) for s in p["stimuli"]],
                    asked_at=event.created_at,
                    asked=False,
                )
                self.trials[trial.trial_id] = trial
                self.next_trial_id = max(self.next_trial_id, trial.trial_id + 1)
            else:
                trial = trial_or_none
            if trial.state == ABANDONED:  # a late tell still counts; its point need not be reissued
                self.reissue.pop(trial.trial_id, None)
            trial.state = COMPLETED
            trial.outcomes = [OutcomeValue.from_json(o) for o in p["outcomes"]]
            trial.metadata = dict(p.get("metadata") or {})
            trial.model_data = bool(p.get("model_data", True))
            trial.told_at = event.created_at
            if p.get("sample_size") is not None:
                trial.sample_size = int(p["sample_size"])
            self.completed += 1
            if trial.model_data:
                self.model_data_points += 1
                self.outcome_counts[trial.outcomes[0].value] += 1
            if p.get("request_id"):
                self.tell_requests[p["request_id"]] = trial.trial_id
        elif event.kind == "abandon":
            assert event.trial_id is not None
            trial = self.trials[event.trial_id]
            trial.state = FAILED if p.get("failed") else ABANDONED
            trial.metadata = {**trial.metadata, "abandon_reason": p.get("reason", "")}
            trial.told_at = event.created_at
            if p.get("reissue"):
                self.reissue[trial.trial_id] = (trial.phase_index, [dict(s) for s in trial.stimuli])
        elif event.kind == "finish_phase":
            index = int(p["phase_index"])
            self.phase_finished_by_request[index] = True
            self.phase_index = max(self.phase_index, index)
        else:
            raise ValueError(f"unknown event kind {event.kind!r}")
