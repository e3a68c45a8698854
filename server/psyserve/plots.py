"""Plots on the server side: a strategy's PlotData and model predictions from the ExperimentService.

Feeds psyserve_client.plot (which owns what the plots show) from the service's public reads:
view, list_trials, parameters and a prediction query. Used by `psyserve plot` (a journal file,
offline) and the dashboard. Never reads the journal or a strategy's internals.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from psyserve_client.plot import Outcome, Parameter, PlotData, PlotPlan, Predictions, Trial, draw, plan, plot_data_from_api

from .service import ExperimentService


def plot_parameters(service: ExperimentService, strategy_id: int) -> list[Parameter]:
    """The strategy's parameters as the plots describe them (NotFound if unknown)."""
    return [
        Parameter(
            name=p.name,
            type=p.type.value,
            lower_bound=p.lower,
            upper_bound=p.upper,
            log_scale=p.log_scale,
            choices=tuple(p.choices),
            value=p.value,
        )
        for p in service.parameters(strategy_id).parameters
    ]


async def plot_data(service: ExperimentService, strategy_id: int, with_trials: bool = True) -> PlotData:
    """What the plots need about one strategy, from the service's public reads (NotFound if unknown);
    assembled by the same function that Client.plot uses on the API's answers. Without trials it
    is cheap (what default_kind needs: the shape, the config and whether a model can be fitted)."""
    trials_now = await service.list_trials(strategy_id) if with_trials else []  # first: it brings an evicted strategy back
    sections = await service.get_config(strategy_id)
    view = service.resume(strategy_id=strategy_id)
    trials = [
        Trial(
            trial_id=t.trial_id,
            stimuli=[dict(s) for s in t.stimuli],
            state=t.state,
            phase_index=t.phase_index,
            phase_name=t.phase_name,
            outcomes=[Outcome(o.name, o.value, o.sem) for o in t.outcomes],
            metadata={k: str(v) for k, v in t.metadata.items()},
        )
        for t in sorted(trials_now, key=lambda t: t.trial_id)
    ]
    return plot_data_from_api(view, plot_parameters(service, strategy_id), sections, trials, view.can_fit)


async def predict(service: ExperimentService, strategy_id: int, planned: PlotPlan, background: bool = False) -> Predictions | None:
    """The model at the plan's points through a prediction query (None when the plot needs no model).
    `background`: the query waits behind every ask's computation (the dashboard's)."""
    if not planned.needs_model:
        return None
    result = await service.query(strategy_id, "prediction", planned.probability_space, x=planned.points, background=background)
    return Predictions([p.probability for p in result.points], [p.lower for p in result.points], [p.upper for p in result.points])


async def render(
    service: ExperimentService,
    strategy_id: int,
    kind: str = "auto",
    x: str | None = None,
    y: str | None = None,
    fixed: Mapping[str, Any] | None = None,
    fmt: str = "png",
    size: tuple[float, float] = (8, 6),
) -> bytes:
    """One plot as PNG or SVG bytes, drawn in this thread (the CLI; the dashboard draws elsewhere)."""
    data = await plot_data(service, strategy_id)
    planned = plan(data, kind, x, y, fixed)
    predictions = await predict(service, strategy_id, planned)
    return figure_bytes(data, planned, predictions, fmt, size)


def figure_bytes(data: PlotData, planned: PlotPlan, predictions: Predictions | None, fmt: str, size: tuple[float, float] = (8, 6)) -> bytes:
    """Draw and encode (a pure function: the dashboard runs it in a separate process)."""
    fig = draw(data, planned, predictions, size)
    out = io.BytesIO()
    fig.savefig(out, format=fmt, dpi=100, metadata={"Date": None} if fmt == "svg" else None)
    return out.getvalue()
