"""Parameter sweeps: PyExpUtils-style descriptions, exact index <-> (permutation, run) maths, and one
sweep's state (which indices are done, leased, failed, missing) with its result aggregation.

State changes only through `SweepStrategy.apply(event)`, so a live request and a journal replay take
the same path. Knows nothing of SQL, asyncio scheduling, the model engine or transports.

Longer than ~500 lines on purpose: one idea, a sweep, from its description to its aggregated
results; the index maths, the state and the aggregation are read together.
"""

from __future__ import annotations

import configparser
import heapq
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import ExperimentSpec, PhaseSpec
from .journal import Event
from .params import ParameterSpace, RawValue
from .strategy import ABANDONED, COMPLETED, FAILED, PENDING, OutcomeValue, Strategy, TrialRecord

ORDERS = ("index", "shuffle")
MAX_PARAMETERS = 256
MAX_VALUES = 100_000
MAX_INDICES = 100_000_000  # permutations x runs
MAX_DESCRIPTION_BYTES = 256 * 1024
SWEEP_SECTIONS = ("sweep", "GridGenerator")
PHASE_NAME = "sweep"
GENERATOR_NAME = "SweepGenerator"


class SweepConfigError(ValueError):
    """A sweep description that cannot be honoured; `field` names the offending key."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


# ---------------------------------------------------------------------- the description
@dataclass(frozen=True)
class SweepSpec:
    """The swept parameters in listed order (dotted names), with the values each takes.

    Index i is permutation i mod p of run i div p (PyExpUtils' getPermutation / getRun); within a
    permutation number the last-listed parameter varies fastest, as PyExpUtils' documented example
    shows (alpha x lambda, 4 x 4: index 1 is alpha=1.0, lambda=0.99).
    """

    parameters: tuple[tuple[str, tuple[RawValue, ...]], ...]
    description: Mapping[str, Any]
    runs: int
    order: str = "index"
    seed: int = 0

    @property
    def num_permutations(self) -> int:
        return math.prod(len(values) for _, values in self.parameters)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.parameters]

    def permutation(self, index: int) -> dict[str, RawValue]:
        """The parameters of index `index` (wrapping: index p is permutation 0 again)."""
        chosen: dict[str, RawValue] = {}
        rest = index
        for name, values in reversed(self.parameters):
            chosen[name] = values[rest % len(values)]
            rest //= len(values)
        return {name: chosen[name] for name, _ in self.parameters}

    def run_of(self, index: int) -> int:
        return index // self.num_permutations

    def to_json(self) -> dict[str, Any]:
        return {
            "parameters": [[name, list(values)] for name, values in self.parameters],
            "description": dict(self.description),
            "runs": self.runs,
            "order": self.order,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SweepSpec:
        return cls(
            parameters=tuple((str(n), tuple(v)) for n, v in data["parameters"]),
            description=dict(data["description"]),
            runs=int(data["runs"]),
            order=str(data["order"]),
            seed=int(data["seed"]),
        )


def _check_scalar(value: object, where: str) -> RawValue:
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SweepConfigError(where, f"values must be finite numbers, got {value!r}")
        return value
    raise SweepConfigError(where, f"values must be numbers, strings or booleans, got {json.dumps(value)}")


def flatten_meta_parameters(meta: Mapping[str, Any], field_prefix: str) -> list[tuple[str, tuple[RawValue, ...]]]:
    """PyExpUtils' flattening: nested objects become dotted names, a list of objects `name.[i].key`,
    a list of scalars is a swept parameter, a lone scalar a one-value parameter. Listed order kept."""
    out: list[tuple[str, tuple[RawValue, ...]]] = []

    def inner(thing: Any, path: str) -> None:
        where = f"{field_prefix}.{path}" if path else field_prefix
        if isinstance(thing, Mapping):
            if not thing:
                raise SweepConfigError(where, "an empty object sweeps nothing")
            for key, value in thing.items():
                if not str(key):
                    raise SweepConfigError(where, "parameter names must not be empty")
                inner(value, f"{path}.{key}" if path else str(key))
            return
        if isinstance(thing, list):
            if not thing:
                raise SweepConfigError(where, "a value list must not be empty")
            if isinstance(thing[0], Mapping):
                for i, sub in enumerate(thing):
                    if not isinstance(sub, Mapping):
                        raise SweepConfigError(f"{where}[{i}]", "a list of objects must hold only objects")
                    inner(sub, f"{path}.[{i}]")
                return
            if len(thing) > MAX_VALUES:
                raise SweepConfigError(where, f"at most {MAX_VALUES} values")
            out.append((path, tuple(_check_scalar(v, f"{where}[{i}]") for i, v in enumerate(thing))))
            return
        out.append((path, (_check_scalar(thing, where),)))

    inner(meta, "")
    return out


def _check_common(parameters: list[tuple[str, tuple[RawValue, ...]]], runs: int, order: str, field_prefix: str) -> None:
    if not parameters:
        raise SweepConfigError(f"{field_prefix}.metaParameters", "no parameters to sweep")
    if len(parameters) > MAX_PARAMETERS:
        raise SweepConfigError(f"{field_prefix}.metaParameters", f"at most {MAX_PARAMETERS} parameters")
    if order not in ORDERS:
        raise SweepConfigError(f"{field_prefix}.order", f"must be one of {list(ORDERS)}, got {order!r}")
    if runs < 1:
        raise SweepConfigError(f"{field_prefix}.runs", f"must be at least 1, got {runs}")
    count = math.prod(len(v) for _, v in parameters)
    if count * runs > MAX_INDICES:
        raise SweepConfigError(f"{field_prefix}.runs", f"{count} permutations x {runs} runs exceeds {MAX_INDICES} indices")


def parse_sweep_json(description_json: str, runs: int, order: str, seed: int) -> SweepSpec:
    """A PyExpUtils experiment description (JSON text) -> SweepSpec; fields are `sweep.*`."""
    if len(description_json.encode()) > MAX_DESCRIPTION_BYTES:
        raise SweepConfigError("sweep.description_json", f"at most {MAX_DESCRIPTION_BYTES} bytes")
    try:
        description = json.loads(description_json)
    except json.JSONDecodeError as exc:
        raise SweepConfigError("sweep.description_json", f"not valid JSON: {exc}") from None
    if not isinstance(description, dict):
        raise SweepConfigError("sweep.description_json", "must be a JSON object with a metaParameters object")
    meta = description.get("metaParameters")
    if not isinstance(meta, dict):
        raise SweepConfigError("sweep.description_json.metaParameters", "required: an object of value lists")
    parameters = flatten_meta_parameters(meta, "sweep.description_json.metaParameters")
    _check_common(parameters, runs, order, "sweep")
    return SweepSpec(tuple(parameters), description, runs, order, seed)


def _ini_value(text: str, where: str) -> RawValue:
    text = text.strip()
    if not text:
        raise SweepConfigError(where, "empty value")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise SweepConfigError(where, f"values must be finite numbers, got {text!r}")
    return number


def sweep_section(config_ini: str) -> str | None:
    """The name of the INI's sweep section (`[sweep]` or `[GridGenerator]`) when the INI is a sweep:
    it has such a section and no `[common] strategy_names` (an AEPsych config may name a phase
    `sweep`; it stays an AEPsych config)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(config_ini)
    except configparser.Error:
        return None
    if parser.has_option("common", "strategy_names"):
        return None
    found = [s for s in SWEEP_SECTIONS if parser.has_section(s)]
    return found[0] if found else None


def parse_sweep_ini(config_ini: str, default_seed: int) -> tuple[SweepSpec, dict[str, str], dict[str, dict[str, str]], list[str]]:
    """An INI with a `[sweep]` (or `[GridGenerator]`) section -> (spec, metadata, sections, warnings).

    In the section `runs`, `order` (index | shuffle) and `seed` are settings; every other key is a
    parameter, in listed order, with a value list `[a, b, c]` or one value. Values are numbers,
    true/false, or strings (quoted or bare).
    """
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep parameter names' case
    try:
        parser.read_string(config_ini)
    except configparser.Error as exc:
        raise SweepConfigError("config_ini", f"not a valid INI file: {exc}") from None
    section = next((s for s in SWEEP_SECTIONS if parser.has_section(s)), None)
    if section is None:
        raise SweepConfigError("config_ini", "no [sweep] section")
    where = f"config_ini[{section}]"
    items = dict(parser.items(section))
    runs_text = items.pop("runs", "1")
    try:
        runs = int(runs_text)
    except ValueError:
        raise SweepConfigError(f"{where}.runs", f"expected an integer, got {runs_text!r}") from None
    order = items.pop("order", "index").strip()
    seed = default_seed
    if "seed" in items:
        seed_text = items.pop("seed")
        try:
            seed = int(seed_text)
        except ValueError:
            raise SweepConfigError(f"{where}.seed", f"expected an integer, got {seed_text!r}") from None
    parameters: list[tuple[str, tuple[RawValue, ...]]] = []
    meta: dict[str, Any] = {}
    for key, text in items.items():
        body = text.strip()
        if body.startswith("["):
            if not body.endswith("]"):
                raise SweepConfigError(f"{where}.{key}", f"unbalanced brackets in {text!r}")
            inner = body[1:-1].strip()
            if not inner:
                raise SweepConfigError(f"{where}.{key}", "a value list must not be empty")
            values = tuple(_ini_value(v, f"{where}.{key}") for v in inner.split(","))
        else:
            values = (_ini_value(body, f"{where}.{key}"),)
        parameters.append((key, values))
        meta[key] = list(values) if len(values) > 1 or body.startswith("[") else values[0]
    try:
        _check_common(parameters, runs, order, where)
    except SweepConfigError as exc:
        if exc.field.endswith(".metaParameters"):
            raise SweepConfigError(where, "no parameters to sweep") from None
        raise
    metadata = dict(parser.items("metadata")) if parser.has_section("metadata") else {}
    sections = {s: dict(parser.items(s)) for s in parser.sections()}
    warnings = [f"config [{s}]: not used by a sweep" for s in parser.sections() if s not in (section, "metadata")]
    spec = SweepSpec(tuple(parameters), {"metaParameters": meta}, runs, order, seed)
    return spec, metadata, sections, warnings


# ---------------------------------------------------------------------- result maths
def summarise_series(series: Sequence[float], last_n: int | None = None, last_percent: float | None = None) -> float:
    """PyExpUtils' getBest windows: the mean of the last n steps, or of the last p percent (at least
    one step, rounded up); the whole series when neither is given."""
    s = np.asarray(series, dtype=float)
    if s.size == 0:
        raise ValueError("empty series")
    if last_n is not None:
        k = min(int(last_n), s.size)
    elif last_percent is not None:
        k = max(1, math.ceil(s.size * float(last_percent) / 100.0))
    else:
        k = s.size
    return float(np.mean(s[-k:]))


def metric_number(outcome: OutcomeValue, last_n: int | None, last_percent: float | None) -> float:
    """One number per run: a series summarised over the window, otherwise the scalar value."""
    if outcome.series:
        return summarise_series(outcome.series, last_n, last_percent)
    return outcome.value


def mean_sem(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample standard deviation, ddof=1, over sqrt(n)); NaN SEM for n=1."""
    a = np.asarray(values, dtype=float)
    mean = float(np.mean(a))
    sem = float(np.std(a, ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan
    return mean, sem


@dataclass(frozen=True)
class MetricStats:
    name: str
    mean: float
    sem: float
    count: int


@dataclass(frozen=True)
class PermutationStats:
    permutation: int
    parameters: dict[str, RawValue]
    runs_done: int
    metrics: list[MetricStats]


@dataclass(frozen=True)
class RunRow:
    index: int
    run: int
    permutation: int
    trial_id: int
    metrics: dict[str, float]
    series_lengths: dict[str, int]


@dataclass(frozen=True)
class SweepResults:
    permutations: list[PermutationStats]
    best_permutation: int | None
    runs: list[RunRow]
    parameter_names: list[str]


@dataclass(frozen=True)
class SweepProgress:
    permutations: int
    runs: int
    total: int
    done: int
    leased: int
    missing: int
    failed: int


@dataclass(frozen=True)
class SweepView:
    """What summaries show of a sweep: its parameters and progress."""

    progress: SweepProgress
    order: str
    seed: int
    parameters: list[tuple[str, list[RawValue]]]
    description_json: str


@dataclass(frozen=True)
class MissingResults:
    indices: list[int]
    leased: list[int]
    failed: list[int]


# ---------------------------------------------------------------------- one sweep's state
def sweep_experiment_spec(sweep: SweepSpec, metadata: Mapping[str, str], sections: Mapping[str, Mapping[str, str]]) -> ExperimentSpec:
    """The ExperimentSpec shape every strategy has: one phase, no model parameters, no fixed outcomes."""
    return ExperimentSpec(
        space=ParameterSpace(()),
        phases=(PhaseSpec(name=PHASE_NAME, generator=GENERATOR_NAME, run_indefinitely=False),),
        stimuli_per_trial=1,
        outcome_types=(),
        outcome_names=(),
        metadata=dict(metadata),
        sections={s: dict(v) for s, v in sections.items()},
        seed=sweep.seed,
        warnings=(),
    )


class SweepStrategy(Strategy):
    """Indices 0 .. permutations x runs - 1, handed out in order (or shuffled run by run), each
    until it has one result. Trials are the attempts; an index has at most one result."""

    def __init__(
        self,
        strategy_id: int,
        name: str,
        sweep: SweepSpec,
        config_ini: str,
        metadata: dict[str, str],
        created_at: float,
        sections: Mapping[str, Mapping[str, str]],
    ) -> None:
        super().__init__(
            strategy_id, name, sweep_experiment_spec(sweep, metadata, sections), config_ini, metadata, created_at, sweep.seed
        )
        self.sweep = sweep
        self.runs = sweep.runs
        self.p = sweep.num_permutations
        self.result_of: dict[int, int] = {}  # index -> trial id of its (first) result
        self.leased: dict[int, int] = {}  # index -> pending trial id (its latest attempt)
        self.failed_indices: set[int] = set()  # last attempt failed, no result
        self.cursor = 0  # next position never handed out
        self._returned: list[int] = []  # heap of positions handed back (abandoned, lease expired)
        self._lease_heap: list[tuple[float, int]] = []  # (expiry, trial id), lazily cleaned
        self._orders: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # run -> (order, inverse) when shuffled
        # Reservations of decisions whose events are being committed (asks and tells commit outside
        # the strategy lock so concurrent workers share fsyncs): not state, never journaled.
        self.in_flight_indices: set[int] = set()  # being handed out
        self.in_flight_trials: set[int] = set()  # being told or abandoned by a tell
        self.in_flight_results: dict[int, int] = {}  # index -> trial whose result is being committed
        self.in_flight_requests: dict[str, Any] = {}  # ask request id -> future of its reply
        self._next_reserved_trial_id = 1

    # ---------------------------------------------------------------- order
    @property
    def total(self) -> int:
        return self.p * self.runs

    def _run_order(self, run: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._orders.get(run)
        if cached is None:
            order = np.random.default_rng([self.sweep.seed, run]).permutation(self.p)
            inverse = np.empty_like(order)
            inverse[order] = np.arange(self.p)
            cached = self._orders[run] = (order, inverse)
        return cached

    def index_at(self, position: int) -> int:
        if self.sweep.order == "index":
            return position
        run, k = divmod(position, self.p)
        return run * self.p + int(self._run_order(run)[0][k])

    def position_of(self, index: int) -> int:
        if self.sweep.order == "index":
            return index
        run, k = divmod(index, self.p)
        return run * self.p + int(self._run_order(run)[1][k])

    def available(self, index: int) -> bool:
        return (
            index < self.total
            and index not in self.result_of
            and index not in self.leased
            and index not in self.failed_indices
            and index not in self.in_flight_indices
        )

    def reserve_trial_ids(self, n: int) -> int:
        """The first of n fresh trial ids (ids of asks still being committed are not reused; an ask
        whose commit fails leaves a gap)."""
        start = max(self.next_trial_id, self._next_reserved_trial_id)
        self._next_reserved_trial_id = start + n
        return start

    def take_indices(self, n: int) -> list[int]:
        """The next n indices neither done, leased nor failed: handed-back ones first (in order),
        then fresh ones. Handed-back entries taken here are popped; `give_back` restores them if
        the ask is not committed."""
        out: list[int] = []
        while self._returned and len(out) < n:
            index = self.index_at(heapq.heappop(self._returned))
            if self.available(index) and index not in out:
                out.append(index)
        position = self.cursor
        while len(out) < n and position < self.total:
            index = self.index_at(position)
            if self.available(index):
                out.append(index)
            position += 1
        return out

    def give_back(self, indices: Sequence[int]) -> None:
        for index in indices:
            if self.available(index):
                heapq.heappush(self._returned, self.position_of(index))

    # ---------------------------------------------------------------- leases
    def expired_leases(self, now: float) -> list[TrialRecord]:
        expired: list[TrialRecord] = []
        while self._lease_heap and self._lease_heap[0][0] <= now:
            expiry, trial_id = heapq.heappop(self._lease_heap)
            trial = self.trials.get(trial_id)
            if trial is not None and trial.state == PENDING and trial.lease_expires_at == expiry:
                expired.append(trial)
        busy = [t for t in expired if t.trial_id in self.in_flight_trials]  # a tell is being committed
        expired = [t for t in expired if t.trial_id not in self.in_flight_trials]
        for trial in expired + busy:  # kept until the abandon is applied (a failed commit is retried)
            assert trial.lease_expires_at is not None
            heapq.heappush(self._lease_heap, (trial.lease_expires_at, trial.trial_id))
        return expired

    def next_lease_expiry(self) -> float | None:
        while self._lease_heap:
            expiry, trial_id = self._lease_heap[0]
            trial = self.trials.get(trial_id)
            if trial is not None and trial.state == PENDING and trial.lease_expires_at == expiry:
                return expiry
            heapq.heappop(self._lease_heap)
        return None

    # ---------------------------------------------------------------- phase rules (one phase)
    def phase_finished(self, index: int, extra_outcome: float | None = None) -> bool:
        return self.is_finished

    @property
    def is_finished(self) -> bool:
        """Every index has a result or failed (or FinishStrategy stopped the sweep)."""
        return self.phase_finished_by_request[0] or len(self.result_of) + len(self.failed_indices) >= self.total

    def phase_for_next_ask(self, extra_outcome: float | None = None) -> int:
        return 0

    def can_fit(self) -> bool:
        return False

    # ---------------------------------------------------------------- views
    @property
    def parameter_names(self) -> list[str]:
        return self.sweep.names

    @property
    def outcome_names(self) -> list[str]:
        """Every metric told so far, in the order they first appeared."""
        names: dict[str, None] = {}
        for trial_id in self.result_of.values():
            names.update(dict.fromkeys(o.name for o in self.trials[trial_id].outcomes))
        return list(names)

    def progress(self) -> SweepProgress:
        done = len(self.result_of)
        leased = sum(1 for i in self.leased if i not in self.result_of)
        return SweepProgress(
            permutations=self.p,
            runs=self.runs,
            total=self.total,
            done=done,
            leased=leased,
            missing=self.total - done,
            failed=len(self.failed_indices),
        )

    def view(self) -> SweepView:
        return SweepView(
            progress=self.progress(),
            order=self.sweep.order,
            seed=self.sweep.seed,
            parameters=[(name, list(values)) for name, values in self.sweep.parameters],
            description_json=json.dumps(self.sweep.description, separators=(",", ":")),
        )

    def missing(self, runs: int) -> MissingResults:
        indices = [i for i in range(runs * self.p) if i not in self.result_of]
        return MissingResults(
            indices=indices,
            leased=[i for i in indices if i in self.leased],
            failed=[i for i in indices if i in self.failed_indices],
        )

    def results(
        self, last_n: int | None = None, last_percent: float | None = None, best_metric: str = "", best_mode: str = "max", include_runs: bool = False
    ) -> SweepResults:
        """Per permutation: mean and SEM over runs of each metric (first result per index only)."""
        per_perm: dict[int, dict[str, list[float]]] = {}
        done_runs: dict[int, int] = {}
        rows: list[RunRow] = []
        for index in sorted(self.result_of):
            trial = self.trials[self.result_of[index]]
            perm, run = index % self.p, index // self.p
            numbers = {o.name: metric_number(o, last_n, last_percent) for o in trial.outcomes}
            done_runs[perm] = done_runs.get(perm, 0) + 1
            bucket = per_perm.setdefault(perm, {})
            for name, number in numbers.items():
                bucket.setdefault(name, []).append(number)
            if include_runs:
                lengths = {o.name: len(o.series or ()) for o in trial.outcomes}
                rows.append(RunRow(index, run, perm, trial.trial_id, numbers, lengths))
        stats: list[PermutationStats] = []
        for perm in sorted(per_perm):
            metrics = []
            for name, values in per_perm[perm].items():
                mean, sem = mean_sem(values)
                metrics.append(MetricStats(name, mean, sem, len(values)))
            stats.append(PermutationStats(perm, self.sweep.permutation(perm), done_runs[perm], metrics))
        best: int | None = None
        if best_metric:
            scored = [(m.mean, s.permutation) for s in stats for m in s.metrics if m.name == best_metric]
            if scored:
                target = max(m for m, _ in scored) if best_mode == "max" else min(m for m, _ in scored)
                best = min(perm for m, perm in scored if m == target)  # ties: the lowest permutation
        return SweepResults(stats, best, rows, self.sweep.names)

    # ---------------------------------------------------------------- the only mutator
    def apply(self, event: Event) -> None:
        p = event.payload
        if event.kind == "ask":
            assert event.trial_id is not None
            index = int(p["sweep_index"])
            trial = TrialRecord(
                trial_id=event.trial_id,
                phase_index=0,
                stimuli=[self.sweep.permutation(index)],
                asked_at=event.created_at,
                lease_expires_at=p.get("lease_expires_at"),
                sweep_index=index,
                sweep_run=index // self.p,
                sweep_permutation=index % self.p,
            )
            self.trials[trial.trial_id] = trial
            self.next_trial_id = max(self.next_trial_id, trial.trial_id + 1)
            self.leased[index] = trial.trial_id
            self.failed_indices.discard(index)
            self.cursor = max(self.cursor, self.position_of(index) + 1)
            self.phase_asks[0] += 1
            if trial.lease_expires_at is not None:
                heapq.heappush(self._lease_heap, (trial.lease_expires_at, trial.trial_id))
            if p.get("request_id"):
                self.ask_requests.setdefault(p["request_id"], []).append(trial.trial_id)
        elif event.kind == "tell":
            assert event.trial_id is not None
            trial = self.trials[event.trial_id]
            assert trial.sweep_index is not None
            index = trial.sweep_index
            trial.state = COMPLETED
            trial.outcomes = [OutcomeValue.from_json(o) for o in p["outcomes"]]
            trial.metadata = dict(p.get("metadata") or {})
            trial.told_at = event.created_at
            trial.model_data = False
            self.completed += 1
            self.result_of.setdefault(index, trial.trial_id)
            if self.leased.get(index) == trial.trial_id:
                del self.leased[index]
            self.failed_indices.discard(index)
        elif event.kind == "abandon":
            assert event.trial_id is not None
            trial = self.trials[event.trial_id]
            assert trial.sweep_index is not None
            index = trial.sweep_index
            trial.state = FAILED if p.get("failed") else ABANDONED
            trial.metadata = {**trial.metadata, "abandon_reason": p.get("reason", "")}
            trial.told_at = event.created_at
            if self.leased.get(index) == trial.trial_id:
                del self.leased[index]
            if index not in self.result_of and index not in self.leased:
                if p.get("failed"):
                    self.failed_indices.add(index)
                else:
                    heapq.heappush(self._returned, self.position_of(index))
        elif event.kind == "sweep_runs":
            self.runs = max(self.runs, int(p["runs"]))
        elif event.kind == "finish_phase":
            self.phase_finished_by_request[0] = True
        else:
            raise ValueError(f"unknown event kind {event.kind!r} for a sweep")

