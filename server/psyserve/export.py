"""Trial export and offline replay: one row per trial, and a strategy summary with its model estimates.

Reads strategies rebuilt by the server's own replay (ExperimentService.recover) and never parses
journal events itself; an offline service is detached from its journal, so export never writes.
"""

from __future__ import annotations

import contextlib
import csv
import json
import statistics
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from .errors import ServiceError
from .journal import Journal
from .service import ExperimentService
from .strategy import ABANDONED, COMPLETED, FAILED, PENDING, Strategy
from .sweep import SweepStrategy

#: Columns every row has, in order; parameter and outcome columns follow, then METADATA_COLUMNS.
TRIAL_COLUMNS = (
    "strategy_id",
    "strategy_name",
    "trial_id",
    "state",
    "asked",
    "phase_index",
    "phase_name",
    "asked_at",
    "asked_at_epoch",
    "told_at",
    "told_at_epoch",
    "model_data",
)
METADATA_COLUMNS = ("metadata", "strategy_metadata")
SWEEP_COLUMNS = ("sweep_index", "sweep_run", "sweep_permutation")
FORMATS = ("csv", "jsonl")


# ---------------------------------------------------------------------- rows
def iso_time(epoch: float | None) -> str | None:
    """Seconds since the epoch -> ISO 8601 in UTC with microseconds (None stays None)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="microseconds")


def parameter_columns(strategy: Strategy) -> list[str]:
    """`param.<name>`, or `param.<name>.<i>` for each stimulus of a pairwise (2-stimulus) trial."""
    spec = strategy.spec
    names = strategy.parameter_names
    if spec.stimuli_per_trial == 1:
        return [f"param.{n}" for n in names]
    return [f"param.{n}.{i}" for n in names for i in range(spec.stimuli_per_trial)]


def outcome_columns(strategy: Strategy) -> list[str]:
    """`outcome.<name>`, `sem.<name>`; sweeps: `sweep_index`, `sweep_run`, `sweep_permutation` first
    and `series.<name>` (a metric's series as a JSON list) after each metric."""
    if isinstance(strategy, SweepStrategy):
        return [*SWEEP_COLUMNS, *(c for n in strategy.outcome_names for c in (f"outcome.{n}", f"sem.{n}", f"series.{n}"))]
    return [c for n in strategy.outcome_names for c in (f"outcome.{n}", f"sem.{n}")]


def selected_strategies(service: ExperimentService, strategy_id: int | None = None) -> list[Strategy]:
    """One strategy (NotFound if unknown) or all of them, by id."""
    if strategy_id is not None:
        return [service.get(strategy_id)]
    return sorted(service.strategies(), key=lambda s: s.strategy_id)


def columns(service: ExperimentService, strategy_id: int | None = None) -> list[str]:
    """Every column the rows of trial_rows() can have, in a stable order (for a CSV header)."""
    out: dict[str, None] = dict.fromkeys(TRIAL_COLUMNS)
    for strategy in selected_strategies(service, strategy_id):
        out.update(dict.fromkeys(parameter_columns(strategy)))
        out.update(dict.fromkeys(outcome_columns(strategy)))
    out.update(dict.fromkeys(METADATA_COLUMNS))
    return list(out)


def trial_rows(service: ExperimentService, strategy_id: int | None = None) -> Iterator[dict[str, Any]]:
    """One flat row per trial (by strategy id, then trial id): the columns of `columns()` that
    apply to its strategy. Parameter values are raw (the units of the config), outcomes absent
    (None) until told; `metadata` and `strategy_metadata` are dicts."""
    for strategy in selected_strategies(service, strategy_id):
        spec = strategy.spec
        names = strategy.parameter_names
        outcome_names = strategy.outcome_names
        sweep = isinstance(strategy, SweepStrategy)
        pairwise = spec.stimuli_per_trial > 1
        for trial in sorted(strategy.trials.values(), key=lambda t: t.trial_id):
            asked_at = trial.asked_at if trial.asked else None
            row: dict[str, Any] = {
                "strategy_id": strategy.strategy_id,
                "strategy_name": strategy.name,
                "trial_id": trial.trial_id,
                "state": trial.state,
                "asked": trial.asked,
                "phase_index": trial.phase_index,
                "phase_name": spec.phases[trial.phase_index].name,
                "asked_at": iso_time(asked_at),
                "asked_at_epoch": asked_at,
                "told_at": iso_time(trial.told_at),
                "told_at_epoch": trial.told_at,
                "model_data": trial.model_data if trial.state == COMPLETED else None,
            }
            for name in names:
                if pairwise:
                    for i, stimulus in enumerate(trial.stimuli):
                        row[f"param.{name}.{i}"] = stimulus.get(name)
                else:
                    row[f"param.{name}"] = trial.stimuli[0].get(name) if trial.stimuli else None
            if sweep:
                row.update(sweep_index=trial.sweep_index, sweep_run=trial.sweep_run, sweep_permutation=trial.sweep_permutation)
            told = {o.name: o for o in trial.outcomes}
            for name in outcome_names:
                outcome = told.get(name)
                row[f"outcome.{name}"] = outcome.value if outcome else None
                row[f"sem.{name}"] = outcome.sem if outcome else None
                if sweep:
                    row[f"series.{name}"] = list(outcome.series) if outcome and outcome.series else None
            row["metadata"] = dict(trial.metadata)
            row["strategy_metadata"] = dict(strategy.metadata)
            yield row


# ---------------------------------------------------------------------- writers
def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def write_csv(rows: Iterable[dict[str, Any]], header: list[str], out: IO[str]) -> int:
    """CSV with `header`; empty cells for None, true/false for booleans, JSON for metadata."""
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
        count += 1
    return count


def write_jsonl(rows: Iterable[dict[str, Any]], out: IO[str]) -> int:
    """One JSON object per line (null for absent values, nested objects for metadata)."""
    count = 0
    for row in rows:
        out.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False, default=str) + "\n")
        count += 1
    return count


# ---------------------------------------------------------------------- offline service
@contextlib.asynccontextmanager
async def offline_service(db: str | Path) -> AsyncIterator[ExperimentService]:
    """Strategies rebuilt from `db` by the server's own replay, detached from the journal.

    Safe on a live server's database: it is read in one transaction, and the service is closed
    (its lease expiry cancelled before it ever ran) before it is handed out, so nothing is written.
    It has no model engine; to answer queries, set `service.models` to a started one (and close it).
    """
    if not Path(db).is_file():
        raise FileNotFoundError(f"no journal database at {db}")
    journal = await Journal.open(db)
    service = ExperimentService(journal, None)
    try:
        await service.recover(expire_leases=False, load_all=True)  # read only: nothing is ever written
    finally:
        await service.close()
    yield service


def resolve_strategy(service: ExperimentService, ref: str) -> int:
    """A strategy given by id or by name -> its id (NotFound if neither)."""
    if ref.strip().isdigit():
        return service.get(int(ref)).strategy_id
    return service.resume(name=ref).strategy_id


# ---------------------------------------------------------------------- replay summary
def _target(strategy: Strategy) -> float | None:
    for phase in strategy.spec.phases:
        if phase.is_model_based and "target" in phase.generator_options:
            return float(phase.generator_options["target"])
    text = strategy.spec.sections.get("common", {}).get("target")
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _outcome_summary(strategy: Strategy) -> list[dict[str, Any]]:
    spec = strategy.spec
    completed = [t for t in strategy.trials.values() if t.state == COMPLETED]
    out = []
    for name, kind in zip(spec.outcome_names, spec.outcome_types, strict=True):
        values = [o.value for t in completed for o in t.outcomes if o.name == name]
        entry: dict[str, Any] = {"name": name, "type": kind, "n": len(values)}
        if kind in ("binary", "ordinal"):
            counts = Counter(values)
            entry["counts"] = {_number_text(v): counts[v] for v in sorted(counts)}
        elif values:
            entry.update(mean=statistics.fmean(values), min=min(values), max=max(values))
        out.append(entry)
    return out


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


async def replay_summary(service: ExperimentService, strategy_id: int, fit: bool = True) -> dict[str, Any]:
    """What `psyserve replay` prints, as a dict: trials, phases, outcome counts and, when the
    strategy has a model-based phase and `fit` (and the service has a model engine), the model's
    max estimate and, for a binary outcome with a target, the threshold (inverse at the target)."""
    strategy = service.get(strategy_id)
    view = service.view(strategy)
    spec = strategy.spec
    trials = list(strategy.trials.values())
    per_phase = Counter(t.phase_index for t in trials)
    summary: dict[str, Any] = {
        "strategy_id": strategy.strategy_id,
        "name": strategy.name,
        "metadata": dict(strategy.metadata),
        "created_at": iso_time(strategy.created_at),
        "is_finished": view.is_finished,
        "current_phase_index": view.current_phase_index,
        "next_ask_phase_index": None if view.is_finished else strategy.phase_for_next_ask(),
        "trials": {
            "total": len(trials),
            "asked": view.trials_asked,
            "told_without_ask": sum(1 for t in trials if not t.asked),
            PENDING: sum(1 for t in trials if t.state == PENDING),
            COMPLETED: sum(1 for t in trials if t.state == COMPLETED),
            ABANDONED: sum(1 for t in trials if t.state == ABANDONED),
            FAILED: sum(1 for t in trials if t.state == FAILED),
            "model_data_points": view.model_data_points,
        },
        "phases": [
            {
                "index": p.index,
                "name": p.name,
                "generator": p.generator,
                "model": p.model,
                "acqf": p.acqf,
                "asks": p.asks,
                "trials": per_phase.get(p.index, 0),
                "finished": p.finished,
            }
            for p in view.phases
        ],
        "outcomes": _outcome_summary(strategy),
    }
    if view.sweep is not None:
        progress = view.sweep.progress
        summary["sweep"] = {
            "permutations": progress.permutations,
            "runs": progress.runs,
            "total": progress.total,
            "done": progress.done,
            "leased": progress.leased,
            "missing": progress.missing,
            "failed": progress.failed,
            "metrics": strategy.outcome_names,
        }
    if not any(p.is_model_based for p in spec.phases):
        return summary
    model: dict[str, Any] = {"fitted": False}
    summary["model"] = model
    if not strategy.can_fit():
        model["reason"] = "too little data to fit a model"
        return summary
    if not fit or service.models is None:
        model["reason"] = "model fitting not requested"
        return summary
    binary = spec.binary_outcome
    try:
        best = await service.query(strategy_id, "max", probability_space=binary)
        point = best.points[0]
        model.update(fitted=True, fit_seconds=best.fit_seconds)
        model["max"] = {"x": point.x, "mean": point.mean, "probability": point.probability if binary else None}
        target = _target(strategy)
        if binary and target is not None:
            inverse = await service.query(strategy_id, "inverse", probability_space=True, y=target)
            found = inverse.points[0]
            model["threshold"] = {"target": target, "x": found.x, "probability": found.probability}
    except ServiceError as exc:
        model["error"] = f"{exc.code}: {exc.message}"
    return summary


def _format_x(x: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in x.items())


def format_summary(summary: dict[str, Any]) -> str:
    """The replay summary as text for a terminal."""
    t = summary["trials"]
    name = f" {summary['name']!r}" if summary["name"] else ""
    lines = [
        f"strategy {summary['strategy_id']}{name}: created {summary['created_at']}, "
        f"{'finished' if summary['is_finished'] else 'not finished'}",
    ]
    if summary["metadata"]:
        lines.append("metadata: " + ", ".join(f"{k}={v}" for k, v in summary["metadata"].items()))
    lines.append(
        f"trials: {t['total']} ({t['completed']} completed, {t['pending']} pending, {t['abandoned']} abandoned, "
        f"{t['failed']} failed; {t['told_without_ask']} told without an ask; {t['model_data_points']} model data points)"
    )
    lines.append("phases:")
    for p in summary["phases"]:
        what = ", ".join(x for x in (p["generator"], p["model"], p["acqf"]) if x)
        current = "  <- next ask" if p["index"] == summary["next_ask_phase_index"] else ""
        lines.append(
            f"  {p['index']} {p['name']} ({what}): {p['asks']} asks, {p['trials']} trials, "
            f"{'finished' if p['finished'] else 'open'}{current}"
        )
    sweep = summary.get("sweep")
    if sweep is not None:
        lines.append(
            f"sweep: {sweep['permutations']} permutations x {sweep['runs']} runs = {sweep['total']} indices; "
            f"{sweep['done']} done, {sweep['leased']} leased, {sweep['missing']} missing ({sweep['failed']} failed); "
            f"metrics: {', '.join(sweep['metrics']) or 'none yet'}"
        )
    lines.append("outcomes:")
    for o in summary["outcomes"]:
        if "counts" in o:
            counts = ", ".join(f"{v}: {n}" for v, n in o["counts"].items()) or "none yet"
            lines.append(f"  {o['name']} ({o['type']}): {o['n']} told; {counts}")
        elif o["n"]:
            lines.append(
                f"  {o['name']} ({o['type']}): {o['n']} told; mean {o['mean']:.4g}, min {o['min']:.4g}, max {o['max']:.4g}"
            )
        else:
            lines.append(f"  {o['name']} ({o['type']}): none told yet")
    model = summary.get("model")
    if model is not None:
        if not model["fitted"]:
            lines.append(f"model: not fitted ({model.get('error') or model.get('reason')})")
        else:
            best = model["max"]
            value = f"p={best['probability']:.3f}" if best["probability"] is not None else f"mean={best['mean']:.4g}"
            lines.append(f"model: refitted in {model['fit_seconds']:.2f} s")
            lines.append(f"  max estimate: {value} at {_format_x(best['x'])}")
            if "threshold" in model:
                th = model["threshold"]
                lines.append(f"  threshold estimate (p={th['target']:g}): {_format_x(th['x'])} (model p={th['probability']:.3f})")
            if "error" in model:
                lines.append(f"  query failed: {model['error']}")
    return "\n".join(lines)
