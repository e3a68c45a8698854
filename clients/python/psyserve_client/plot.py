"""Plots of one strategy (matplotlib): the psychometric field, 1-D slices, trial history, best so far, pairwise utility.

Owns what each plot shows and how it is laid out, as pure functions of a `PlotData` (what the
server says about a strategy) and the model's predictions at the points `plan()` asks for. Knows
nothing of gRPC, the server's internals or where the predictions come from: the client
(`Client.plot`), the `psyserve plot` command (a journal file, offline) and the dashboard each
fetch `PlotData`, run `plan()`, get predictions their own way, then call `draw()`.

Needs matplotlib (`pip install psyserve-client[plot]`); figures are built without pyplot, so
drawing is safe off the main thread and leaves no global state behind.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._common import Outcome, Parameter, Trial, Value

__all__ = [  # the data types are re-exported: PlotData is built from them (server side too)
    "KINDS",
    "Outcome",
    "Parameter",
    "PlotData",
    "PlotError",
    "PlotPlan",
    "Predictions",
    "Trial",
    "count_trial_markers",
    "default_kind",
    "draw",
    "plan",
    "plot_data_from_api",
    "predictions_from_query",
]

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn
    from matplotlib.figure import Figure

KINDS = ("auto", "field", "slice", "history", "best", "utility", "sweep")
NUMERIC = ("continuous", "integer")
TRIAL_GID = "trials"  # gid of every collection whose points are trials (count_trial_markers reads it)
YES_COLOUR, NO_COLOUR, PENDING_COLOUR = "#d62728", "#1f77b4", "#7f7f7f"
MAX_SLICES = 4


class PlotError(ValueError):
    """A plot cannot be drawn as asked; `field` names the option at fault (kind, x, y, fixed.NAME)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PlotData:
    """What the server says about one strategy, as far as plots need it."""

    strategy_id: int
    name: str
    parameters: list[Parameter]
    outcome_type: str  # binary | continuous | ordinal (the first outcome)
    stimuli_per_trial: int
    phase_names: list[str]
    model_phases: list[bool]  # per phase: model-based?
    target: float | None  # the level-set target (threshold experiments), if any
    trials: list[Trial]
    can_fit: bool = False
    sweep_parameters: dict[str, tuple[Value, ...]] | None = None  # parameter sweeps: each parameter's values

    @property
    def is_sweep(self) -> bool:
        return self.sweep_parameters is not None

    @property
    def has_model(self) -> bool:
        return any(self.model_phases)

    @property
    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.state == "completed" and t.outcomes]


@dataclass(frozen=True)
class Predictions:
    """The model at `PlotPlan.points`: the probability (binary outcomes) or mean, and its 95% band."""

    value: list[float]
    lower: list[float]
    upper: list[float]


@dataclass(frozen=True)
class PlotPlan:
    """A plot resolved against a strategy: its kind, axes, the values the other parameters are
    held at, and the points the model must be evaluated at (empty for trial-only plots)."""

    kind: str
    x: str | None
    y: str | None
    base: dict[str, Value]
    points: list[dict[str, Value]] = field(default_factory=list)
    probability_space: bool = True
    segments: list[tuple[str, int, int]] = field(default_factory=list)  # slices: (parameter, start, stop) in points
    grid: tuple[list[float], list[float]] | None = None  # field: x values, y values (points are y-major)

    @property
    def needs_model(self) -> bool:
        return bool(self.points)


# ---------------------------------------------------------------------------- planning
def _free_numeric(data: PlotData) -> list[Parameter]:
    return [p for p in data.parameters if p.type in NUMERIC]


def _param(data: PlotData, name: str, option: str) -> Parameter:
    for p in data.parameters:
        if p.name == name:
            if p.type not in NUMERIC:
                raise PlotError(f"{option}: parameter {name!r} is {p.type}; plots need a continuous or integer parameter", option)
            return p
    raise PlotError(f"{option}: unknown parameter {name!r} (known: {[p.name for p in data.parameters]})", option)


def _default_value(p: Parameter) -> Value:
    if p.type == "fixed":
        return p.value if p.value is not None else ""
    if p.type == "categorical":
        return p.choices[0]
    if p.type == "binary":
        return 0
    if p.log_scale and p.lower_bound > 0:
        mid = math.sqrt(p.lower_bound * p.upper_bound)
    else:
        mid = (p.lower_bound + p.upper_bound) / 2
    return int(round(mid)) if p.type == "integer" else mid


def _fixed_value(p: Parameter, raw: Value) -> Value:
    option = f"fixed.{p.name}"
    if p.type == "categorical":
        if str(raw) not in p.choices:
            raise PlotError(f"{option}: {raw!r} is not one of {list(p.choices)}", option)
        return str(raw)
    if p.type == "fixed":
        return p.value if p.value is not None else raw
    try:
        number = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise PlotError(f"{option}: expected a number, got {raw!r}", option) from None
    if not math.isfinite(number) or not p.lower_bound <= number <= p.upper_bound:
        raise PlotError(f"{option}: {raw!r} is outside [{p.lower_bound:g}, {p.upper_bound:g}]", option)
    if p.type == "binary":
        if number not in (0, 1):
            raise PlotError(f"{option}: a binary parameter is 0 or 1, got {raw!r}", option)
        return int(number)
    if p.type == "integer":
        if number != int(number):
            raise PlotError(f"{option}: an integer parameter needs a whole number, got {raw!r}", option)
        return int(number)
    return number


def axis_values(p: Parameter, count: int) -> list[float]:
    """`count` values across a parameter's range (geometric on a log scale; whole numbers for integers)."""
    import numpy as np

    lo, hi = float(p.lower_bound), float(p.upper_bound)
    values = np.geomspace(lo, hi, count) if p.log_scale and lo > 0 else np.linspace(lo, hi, count)
    if p.type == "integer":
        values = np.unique(np.round(values))
    return [float(v) for v in values]


def _point_value(p: Parameter, v: float) -> Value:
    return int(v) if p.type == "integer" else float(v)


def default_kind(data: PlotData) -> str:
    """The plot that says most about this strategy: pairwise utility, best so far (continuous
    outcomes), the 2-D field (two numeric parameters or more), a slice, or the trial history."""
    if data.is_sweep:
        return "sweep"
    if not data.has_model or not data.can_fit:
        return "history"
    if data.stimuli_per_trial > 1:
        return "utility"
    if data.outcome_type != "binary":
        return "best"
    return "field" if len(_free_numeric(data)) >= 2 else "slice"


def plan(
    data: PlotData,
    kind: str = "auto",
    x: str | None = None,
    y: str | None = None,
    fixed: Mapping[str, Value] | None = None,
    resolution: int = 40,
) -> PlotPlan:
    """Resolve a plot request: check the options (PlotError names the bad one) and list the
    points the model is needed at. Parameters not plotted are held at `fixed` or their midpoint."""
    if kind not in KINDS:
        raise PlotError(f"kind: unknown plot kind {kind!r} (known: {list(KINDS)})", "kind")
    if not 2 <= resolution <= 200:
        raise PlotError(f"resolution: must be in 2..200, got {resolution}", "resolution")
    if kind == "auto":
        kind = default_kind(data)
    if data.is_sweep or kind == "sweep":
        return _plan_sweep(data, kind, x, y, fixed)
    by_name = {p.name: p for p in data.parameters}
    base: dict[str, Value] = {p.name: _default_value(p) for p in data.parameters}
    for name, raw in (fixed or {}).items():
        if name not in by_name:
            raise PlotError(f"fixed.{name}: unknown parameter {name!r} (known: {list(by_name)})", f"fixed.{name}")
        base[name] = _fixed_value(by_name[name], raw)
    numeric = _free_numeric(data)
    px = _param(data, x, "x") if x else None
    py = _param(data, y, "y") if y else None
    if kind in ("field", "slice", "utility"):
        if not data.has_model:
            raise PlotError(f"kind: a {kind} plot needs a model, and this strategy has no model-based phase", "kind")
        if not numeric:
            raise PlotError(f"kind: a {kind} plot needs a continuous or integer parameter", "kind")
    if kind in ("field", "slice") and data.stimuli_per_trial > 1:
        raise PlotError(f"kind: a pairwise experiment has no response probability to plot as a {kind}; use 'utility'", "kind")
    if kind == "utility" and data.stimuli_per_trial == 1:
        raise PlotError("kind: 'utility' is for pairwise (stimuli_per_trial = 2) experiments", "kind")
    if kind == "best" and data.outcome_type == "binary":
        raise PlotError("kind: 'best' (best so far) needs a continuous outcome; this strategy's outcome is binary", "kind")
    probability_space = data.outcome_type == "binary"
    if kind == "field":
        if px is None:
            px = next((p for p in numeric if py is None or p.name != py.name), None)
        if py is None:
            py = next((p for p in numeric if p.name != (px.name if px else None)), None)
        if px is None or py is None or px.name == py.name:
            raise PlotError("y: a field plot needs two different continuous or integer parameters", "y")
        xs, ys = axis_values(px, resolution), axis_values(py, resolution)
        points = [{**base, px.name: _point_value(px, xv), py.name: _point_value(py, yv)} for yv in ys for xv in xs]
        return PlotPlan("field", px.name, py.name, base, points, probability_space, grid=(xs, ys))
    if kind in ("slice", "utility"):
        chosen = [px] if px is not None else numeric[:MAX_SLICES]
        points, segments = [], []
        for p in chosen:
            values = axis_values(p, max(resolution, 2) * 2)
            segments.append((p.name, len(points), len(points) + len(values)))
            points += [{**base, p.name: _point_value(p, v)} for v in values]
        return PlotPlan(kind, chosen[0].name, None, base, points, probability_space and kind == "slice", segments)
    return PlotPlan(kind, px.name if px else None, None, base)


def _metric_names(data: PlotData) -> list[str]:
    return list(dict.fromkeys(o.name for t in data.completed for o in t.outcomes))


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-12)
    return str(a) == str(b)


def _sweep_means(data: PlotData, metric: str) -> dict[tuple[str, ...], tuple[dict[str, Value], list[float]]]:
    """Told values of `metric` per permutation (keyed by its parameter values as text)."""
    out: dict[tuple[str, ...], tuple[dict[str, Value], list[float]]] = {}
    names = list(data.sweep_parameters or {})
    for t in data.completed:
        value = next((o.value for o in t.outcomes if o.name == metric), None)
        if value is None or not t.stimuli:
            continue
        key = tuple(str(t.stimuli[0].get(n)) for n in names)
        out.setdefault(key, ({n: t.stimuli[0].get(n, "") for n in names}, []))[1].append(float(value))
    return out


def _plan_sweep(data: PlotData, kind: str, x: str | None, y: str | None, fixed: Mapping[str, Value] | None) -> PlotPlan:
    """A sweep: a metric (`y`, default the first told) over parameter `x` (default the first swept
    one with several values); the others at `fixed` or, by default, the best permutation's values."""
    if not data.is_sweep:
        raise PlotError("kind: 'sweep' is for parameter sweeps; this strategy is not one", "kind")
    if kind not in ("sweep", "history"):
        raise PlotError(f"kind: a parameter sweep has no model to plot as a {kind}; use 'sweep' or 'history'", "kind")
    swept = data.sweep_parameters or {}
    if kind == "history":
        return PlotPlan("history", None, None, {})
    if x is not None and x not in swept:
        raise PlotError(f"x: unknown sweep parameter {x!r} (known: {list(swept)})", "x")
    varied = [n for n, values in swept.items() if len(values) > 1]
    x = x or (varied[0] if varied else next(iter(swept), None))
    if x is None:
        raise PlotError("x: this sweep has no parameters", "x")
    metrics = _metric_names(data)
    if y is not None and y not in metrics:
        raise PlotError(f"y: no told metric named {y!r} (told: {metrics})", "y")
    metric = y or (metrics[0] if metrics else "")
    base: dict[str, Value] = {}
    for name, raw in (fixed or {}).items():
        if name not in swept:
            raise PlotError(f"fixed.{name}: unknown sweep parameter {name!r} (known: {list(swept)})", f"fixed.{name}")
        match = next((v for v in swept[name] if _same(v, raw) or str(v) == str(raw)), None)
        if match is None:
            raise PlotError(f"fixed.{name}: {raw!r} is not one of the swept values {list(swept[name])}", f"fixed.{name}")
        base[name] = match
    if metric:
        means = _sweep_means(data, metric)
        candidates = [(sum(v) / len(v), params) for params, v in means.values() if all(_same(params[k], base[k]) for k in base)]
        if candidates:
            best = max(candidates, key=lambda c: c[0])[1]
            base.update({k: v for k, v in best.items() if k not in base and k != x})
    base.pop(x, None)
    return PlotPlan("sweep", x, metric or None, base)


# ---------------------------------------------------------------------------- drawing
def _figure(size: tuple[float, float], dpi: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=dpi)  # fixed margins: a layout engine costs ~40% more time per figure


def _response(trial: Trial) -> float:
    return float(trial.outcomes[0].value)


def _numeric(value: Value) -> float:
    return float(value) if isinstance(value, (int, float, bool)) else math.nan


def _title(data: PlotData, what: str) -> str:
    name = f" {data.name!r}" if data.name else ""
    return f"strategy {data.strategy_id}{name}: {what} ({len(data.completed)} trials told)"


def _set_scale(ax: Any, p: Parameter, axis: str) -> None:
    if p.log_scale and p.lower_bound > 0:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def draw(data: PlotData, plot: PlotPlan, predictions: Predictions | None = None, size: tuple[float, float] = (8, 6), dpi: float = 100) -> Figure:
    """The figure for a planned plot (`predictions` at `plot.points`, required when it needs the model).
    Trial markers are in collections whose gid is "trials" (see count_trial_markers)."""
    if plot.needs_model and (predictions is None or len(predictions.value) != len(plot.points)):
        raise PlotError("predictions: the model's predictions at the planned points are required", "predictions")
    fig = _figure(size, dpi)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no contour levels were found" when the target is out of range
        _DRAW[plot.kind](fig, data, plot, predictions)
    return fig


def _draw_field(fig: Figure, data: PlotData, plot: PlotPlan, pred: Predictions | None) -> None:
    import numpy as np

    assert pred is not None and plot.grid is not None and plot.x and plot.y
    by_name = {p.name: p for p in data.parameters}
    px, py = by_name[plot.x], by_name[plot.y]
    xs, ys = (np.asarray(v) for v in plot.grid)
    shape = (len(ys), len(xs))
    value, lower, upper = (np.asarray(v, dtype=float).reshape(shape) for v in (pred.value, pred.lower, pred.upper))
    fig.subplots_adjust(left=0.09, right=0.99, bottom=0.1, top=0.93)
    ax = fig.add_subplot()
    binary = data.outcome_type == "binary"
    mesh = ax.pcolormesh(xs, ys, value, cmap="viridis", shading="auto", vmin=0 if binary else None, vmax=1 if binary else None)
    fig.colorbar(mesh, ax=ax, label="P(yes)" if binary else "model mean")
    if data.target is not None:
        inside = ((lower <= data.target) & (upper >= data.target)).astype(float)
        if inside.any():
            ax.contourf(xs, ys, inside, levels=[0.5, 1.5], colors="none", hatches=["//"])
            ax.contourf(xs, ys, inside, levels=[0.5, 1.5], colors=["white"], alpha=0.15)
        ax.contour(xs, ys, value, levels=[data.target], colors="white", linewidths=2)
        ax.plot([], [], color="white", linewidth=2, label=f"target {data.target:g}")
        ax.fill_between([], [], color="white", alpha=0.3, hatch="//", label="95% band")
    _scatter_trials_2d(ax, data, plot.x, plot.y, binary)
    _set_scale(ax, px, "x")
    _set_scale(ax, py, "y")
    ax.set_xlim(px.lower_bound, px.upper_bound)
    ax.set_ylim(py.lower_bound, py.upper_bound)
    ax.set_xlabel(plot.x)
    ax.set_ylabel(plot.y)
    others = ", ".join(f"{k}={_fmt(v)}" for k, v in plot.base.items() if k not in (plot.x, plot.y))
    ax.set_title(_title(data, "model" + (f" at {others}" if others else "")), fontsize=10)
    ax.legend(loc="upper right", fontsize=8, facecolor="#dddddd", framealpha=0.8)


def _fmt(v: Value) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _scatter_trials_2d(ax: Any, data: PlotData, x: str, y: str, binary: bool) -> None:
    done = data.completed
    if binary:
        for label, want, colour, marker in (("yes", 1.0, YES_COLOUR, "o"), ("no", 0.0, NO_COLOUR, "X")):
            chosen = [t for t in done if _response(t) == want]
            ax.scatter(
                [_numeric(t.stimuli[0][x]) for t in chosen],
                [_numeric(t.stimuli[0][y]) for t in chosen],
                c=colour,
                marker=marker,
                edgecolors="white",
                linewidths=0.6,
                s=36,
                label=f"{label} ({len(chosen)})",
                gid=TRIAL_GID,
                zorder=3,
            )
    else:
        ax.scatter(
            [_numeric(t.stimuli[0][x]) for t in done],
            [_numeric(t.stimuli[0][y]) for t in done],
            c=[_response(t) for t in done],
            cmap="plasma",
            edgecolors="white",
            s=36,
            label=f"trials ({len(done)})",
            gid=TRIAL_GID,
            zorder=3,
        )
    pending = [t for t in data.trials if t.state == "pending" and t.stimuli]
    if pending:
        ax.scatter(
            [_numeric(t.stimuli[0][x]) for t in pending],
            [_numeric(t.stimuli[0][y]) for t in pending],
            facecolors="none",
            edgecolors="black",
            s=60,
            label=f"pending ({len(pending)})",
            gid="pending",
            zorder=3,
        )


def _bins(values: Sequence[float], responses: Sequence[float], p: Parameter, count: int = 8) -> tuple[list[float], list[float], list[int]]:
    """Observed responses binned along a parameter: (bin centres, mean response, trials per bin), empty bins left out."""
    import numpy as np

    log = p.log_scale and p.lower_bound > 0
    edges = np.geomspace(p.lower_bound, p.upper_bound, count + 1) if log else np.linspace(p.lower_bound, p.upper_bound, count + 1)
    v, r = np.asarray(values, dtype=float), np.asarray(responses, dtype=float)
    index = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, count - 1)
    centres, means, counts = [], [], []
    for b in range(count):
        mask = index == b
        if mask.any():
            centres.append(float(np.sqrt(edges[b] * edges[b + 1]) if log else (edges[b] + edges[b + 1]) / 2))
            means.append(float(r[mask].mean()))
            counts.append(int(mask.sum()))
    return centres, means, counts


def _draw_slices(fig: Figure, data: PlotData, plot: PlotPlan, pred: Predictions | None) -> None:
    import numpy as np

    assert pred is not None
    by_name = {p.name: p for p in data.parameters}
    utility = plot.kind == "utility"
    binary = data.outcome_type == "binary" and not utility
    n = len(plot.segments)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    done = data.completed
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.1, top=0.91, wspace=0.25, hspace=0.35)
    for i, (name, start, stop) in enumerate(plot.segments):
        p = by_name[name]
        ax = fig.add_subplot(rows, cols, i + 1)
        xs = [_numeric(point[name]) for point in plot.points[start:stop]]
        value = np.asarray(pred.value[start:stop])
        ax.fill_between(xs, pred.lower[start:stop], pred.upper[start:stop], color="C0", alpha=0.25, label="95% band")
        ax.plot(xs, value, color="C0", linewidth=2, label="utility" if utility else ("P(yes)" if binary else "model mean"))
        if utility:
            _pairwise_rug(ax, done, name, float(np.min(pred.lower[start:stop])))
        else:
            observed = [_numeric(t.stimuli[0][name]) for t in done]
            responses = [_response(t) for t in done]
            ax.scatter(observed, responses, s=10, color="black", alpha=0.35, gid=TRIAL_GID, label=f"trials ({len(done)})")
            if done:
                centres, means, counts = _bins(observed, responses, p)
                ax.scatter(centres, means, s=[20 + 8 * c for c in counts], marker="s", color=YES_COLOUR, edgecolors="black", gid="bins", label="observed, binned", zorder=3)
            if binary and data.target is not None:
                ax.axhline(data.target, color="grey", linestyle=":", linewidth=1, label=f"target {data.target:g}")
        if binary:
            ax.set_ylim(-0.05, 1.05)
        _set_scale(ax, p, "x")
        ax.set_xlabel(name)
        ax.set_ylabel("utility" if utility else ("P(yes)" if binary else "response"))
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    others = ", ".join(f"{k}={_fmt(v)}" for k, v in plot.base.items() if k not in {s[0] for s in plot.segments} or n > 1)
    fig.suptitle(_title(data, ("utility" if utility else "slices") + (f"; others at {others}" if others else "")), fontsize=10)


def _pairwise_rug(ax: Any, done: list[Trial], name: str, floor: float) -> None:
    """Each comparison's preferred stimulus (filled) and the other (hollow), below the curve."""
    winners, losers = [], []
    for t in done:
        if len(t.stimuli) < 2:
            continue
        first_wins = _response(t) >= 0.5
        winners.append(_numeric(t.stimuli[0 if first_wins else 1][name]))
        losers.append(_numeric(t.stimuli[1 if first_wins else 0][name]))
    ax.scatter(winners, [floor] * len(winners), marker="^", color=YES_COLOUR, s=28, gid=TRIAL_GID, label=f"preferred ({len(winners)})")
    ax.scatter(losers, [floor] * len(losers), marker="v", facecolors="none", edgecolors=NO_COLOUR, s=28, gid="losers", label="not preferred")


def _sweep_parameter(name: str, values: Sequence[Value]) -> Parameter:
    """A swept parameter as a Parameter (numeric values on a number line, others as categories)."""
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        numbers = [float(v) for v in values]  # type: ignore[arg-type]
        return Parameter(name, "continuous", min(numbers), max(numbers))
    return Parameter(name, "categorical", 0, 0, choices=tuple(str(v) for v in values))


def _phase_changes(trials: list[Trial]) -> list[tuple[int, int]]:
    """(trial number, new phase index) where the phase differs from the previous trial's."""
    out, last = [], None
    for number, t in enumerate(trials, start=1):
        if last is not None and t.phase_index != last:
            out.append((number, t.phase_index))
        last = t.phase_index
    return out


def _mark_phases(ax: Any, trials: list[Trial], data: PlotData, label: bool) -> None:
    for number, phase in _phase_changes(trials):
        ax.axvline(number - 0.5, color="black", linestyle="--", linewidth=1, gid="phase-change")
        if label:
            name = data.phase_names[phase] if phase < len(data.phase_names) else str(phase)
            ax.annotate(name, (number - 0.5, 1.0), xycoords=("data", "axes fraction"), fontsize=8, rotation=90, va="top", ha="right")


def _draw_history(fig: Figure, data: PlotData, plot: PlotPlan, pred: Predictions | None) -> None:
    trials = sorted((t for t in data.trials if t.stimuli), key=lambda t: t.trial_id)
    shown = [p for p in data.parameters if p.type != "fixed"] or [
        _sweep_parameter(name, values) for name, values in (data.sweep_parameters or {}).items() if len(values) > 1
    ]
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.09, top=0.93, hspace=0.12)
    axes = fig.subplots(len(shown) + 1, 1, sharex=True, squeeze=False)[:, 0]
    numbers = list(range(1, len(trials) + 1))
    colours = [f"C{t.phase_index % 10}" for t in trials]
    for ax, p in zip(axes, shown, strict=False):
        for s in range(max((len(t.stimuli) for t in trials), default=1)):
            values = [t.stimuli[s][p.name] if s < len(t.stimuli) else None for t in trials]
            if p.type in NUMERIC or p.type == "binary":
                ys: list[Any] = [_numeric(v) if v is not None else math.nan for v in values]
            else:
                ys = [p.choices.index(str(v)) if v is not None and str(v) in p.choices else math.nan for v in values]
                ax.set_yticks(range(len(p.choices)), list(p.choices))
            hollow = [t.state != "completed" for t in trials]
            ax.scatter(
                numbers,
                ys,
                c=colours,
                s=16,
                marker="o" if s == 0 else "D",
                gid=TRIAL_GID if s == 0 else "trials-second-stimulus",
                linewidths=[1.2 if h else 0 for h in hollow],
                edgecolors=["black" if h else "none" for h in hollow],
            )
        if p.type in NUMERIC:
            _set_scale(ax, p, "y")
        ax.set_ylabel(p.name)
        _mark_phases(ax, trials, data, ax is axes[0])
    ax = axes[-1]
    done = [(n, t) for n, t in zip(numbers, trials, strict=True) if t.state == "completed" and t.outcomes]
    ax.scatter([n for n, _ in done], [_response(t) for _, t in done], s=16, color="black", gid="responses")
    ax.set_ylabel("response")
    ax.set_xlabel("trial")
    _mark_phases(ax, trials, data, False)
    pending = sum(t.state == "pending" for t in trials)
    fig.suptitle(_title(data, f"trial history, {pending} pending; colour = phase, dashed = phase change"), fontsize=10)


def _draw_best(fig: Figure, data: PlotData, plot: PlotPlan, pred: Predictions | None) -> None:
    done = sorted(data.completed, key=lambda t: t.trial_id)
    values = [_response(t) for t in done]
    numbers = list(range(1, len(done) + 1))
    best, running = [], -math.inf
    for v in values:
        running = max(running, v)
        best.append(running)
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)
    ax = fig.add_subplot()
    ax.scatter(numbers, values, s=18, color="C0", gid=TRIAL_GID, label="observed")
    ax.step(numbers, best, where="post", color=YES_COLOUR, linewidth=2, label="best so far")
    _mark_phases(ax, done, data, True)
    ax.set_xlabel("trial (told)")
    ax.set_ylabel("outcome")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(_title(data, "best so far" + (f": {best[-1]:.4g}" if best else "")), fontsize=10)


def _draw_sweep(fig: Figure, data: PlotData, plot: PlotPlan, pred: Predictions | None) -> None:
    import numpy as np

    assert plot.x is not None
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.12, top=0.9)
    ax = fig.add_subplot()
    values = list((data.sweep_parameters or {}).get(plot.x, ()))
    numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    position = {str(v): (float(v) if numeric else float(i)) for i, v in enumerate(values)}  # type: ignore[arg-type]
    xs, ys = [], []
    for t in data.completed:
        s = t.stimuli[0] if t.stimuli else {}
        if not all(_same(s.get(k, ""), v) for k, v in plot.base.items()):
            continue
        value = next((o.value for o in t.outcomes if o.name == plot.y), None)
        if value is None or str(s.get(plot.x)) not in position:
            continue
        xs.append(position[str(s.get(plot.x))])
        ys.append(float(value))
    ax.scatter(xs, ys, s=14, color="black", alpha=0.4, gid=TRIAL_GID, label=f"runs ({len(xs)})", zorder=3)
    centres, means, sems = [], [], []
    for v in values:
        here = [y for x, y in zip(xs, ys, strict=True) if x == position[str(v)]]
        if here:
            centres.append(position[str(v)])
            means.append(float(np.mean(here)))
            sems.append(float(np.std(here, ddof=1) / math.sqrt(len(here))) if len(here) > 1 else 0.0)
    ax.errorbar(centres, means, yerr=sems, color="C0", linewidth=2, marker="o", capsize=4, label="mean ± SEM over runs")
    if numeric and values and min(float(v) for v in values) > 0 and max(float(v) for v in values) / min(float(v) for v in values) >= 10:  # type: ignore[arg-type]
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks([position[str(v)] for v in values], [str(v) for v in values])
    ax.set_xlabel(plot.x)
    ax.set_ylabel(f"{plot.y} (final value)" if plot.y else "metric")
    ax.legend(fontsize=8, loc="best")
    others = ", ".join(f"{k}={_fmt(v)}" for k, v in plot.base.items())
    ax.set_title(_title(data, f"sweep: {plot.y} over {plot.x}" + (f"; {others}" if others else "")), fontsize=10)


_DRAW: dict[str, Callable[[Figure, PlotData, PlotPlan, Predictions | None], None]] = {
    "field": _draw_field,
    "slice": _draw_slices,
    "utility": _draw_slices,
    "history": _draw_history,
    "best": _draw_best,
    "sweep": _draw_sweep,
}


def count_trial_markers(fig: Figure) -> int:
    """How many trial markers a figure draws (points of every collection with gid "trials")."""
    import numpy as np

    return int(sum(np.asarray(c.get_offsets()).shape[0] for ax in fig.axes for c in ax.collections if c.get_gid() == TRIAL_GID))


# ---------------------------------------------------------------------------- from the API's answers
def _config_list(text: str | None) -> list[str]:
    if not text:
        return []
    return [s.strip() for s in text.strip().strip("[]").split(",") if s.strip()]


def plot_data_from_api(
    summary: Any, parameters: Sequence[Parameter], config: Mapping[str, Mapping[str, str]], trials: Sequence[Trial], can_fit: bool
) -> PlotData:
    """PlotData from Info's summary, Parameters, GetConfig and ListTrials (what Client.plot fetches)."""
    common = config.get("common", {})
    outcome_types = _config_list(common.get("outcome_types")) or ["binary"]
    target: float | None = None
    for phase in summary.phases:
        if phase.model and phase.acqf and "target" in config.get(phase.acqf, {}):
            target = float(config[phase.acqf]["target"])
            break
    if target is None and "target" in common:
        target = float(common["target"])
    return PlotData(
        strategy_id=summary.strategy_id,
        name=summary.name,
        parameters=list(parameters),
        outcome_type=outcome_types[0],
        stimuli_per_trial=int(common.get("stimuli_per_trial", "1") or 1),
        phase_names=[p.name for p in summary.phases],
        model_phases=[bool(p.model) for p in summary.phases],
        target=target,
        trials=list(trials),
        can_fit=can_fit,
        sweep_parameters=_sweep_values(getattr(summary, "sweep", None)),
    )


def _sweep_values(sweep: Any) -> dict[str, tuple[Value, ...]] | None:
    """A sweep's parameters and values from a summary's `sweep` (a mapping, or (name, values) pairs)."""
    if sweep is None:
        return None
    return {str(name): tuple(values) for name, values in dict(sweep.parameters).items()}


def predictions_from_query(results: Sequence[Any]) -> Predictions:
    """Predictions from a prediction query's answers (`Prediction`s: probability, lower, upper)."""
    return Predictions([p.probability for p in results], [p.lower for p in results], [p.upper for p in results])
