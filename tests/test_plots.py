"""Plots from real experiments: every kind through the API (Client.plot) and from a journal file
(`psyserve plot`), checked as images of the right size with the right number of trial markers."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread
from psyserve.app import ServerOptions
from psyserve.cli import main as cli_main
from psyserve_client.plot import PlotError, count_trial_markers

REGRESSION = """
[common]
parnames = [lr, layers]
outcome_types = [continuous]
strategy_names = [init, opt]
seed = 5
[lr]
lower_bound = 0.0001
upper_bound = 0.1
log_scale = True
[layers]
par_type = integer
lower_bound = 1
upper_bound = 8
[init]
generator = SobolGenerator
min_asks = 6
[opt]
generator = OptimizeAcqfGenerator
model = GPRegressionModel
acqf = qLogNoisyExpectedImprovement
min_asks = 10
"""

PAIRWISE = """
[common]
parnames = [x, y]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init, opt]
seed = 4
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 6
[opt]
generator = OptimizeAcqfGenerator
model = PairwiseProbitModel
acqf = PairwiseMCPosteriorVariance
min_asks = 10
"""


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (checks the signature and the IHDR chunk)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def detection(c: float, a: float) -> float:
    return 1 / (1 + math.exp(-(a - 0.5 * c) / 0.15))


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, dict[str, int]]]:
    """A model server with three strategies run for real: threshold (binary, 2-D), regression
    (continuous), pairwise; each left with one trial pending."""
    db = str(Path(tmp_path_factory.mktemp("plots")) / "plots.db")
    srv = ServerThread(ServerOptions(port=0, db=db, workers=2))
    rng = random.Random(3)
    ids: dict[str, int] = {}
    with pc.Client(srv.address, timeout=120) as client:
        ids["threshold"] = client.configure(config_path=str(CONFIGS / "threshold_2d.ini"), config_name="P01").strategy_id
        for _ in range(14):
            trial = client.ask().trials[0]
            p = detection(float(trial.params["c"]), float(trial.params["a"]))  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=int(rng.random() < p))
        client.ask()  # pending
        ids["regression"] = client.configure(config_str=REGRESSION, config_name="opt").strategy_id
        for _ in range(9):
            trial = client.ask().trials[0]
            score = -abs(math.log10(float(trial.params["lr"])) + 2) + int(trial.params["layers"]) / 8  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=score + rng.gauss(0, 0.05))
        client.ask()
        ids["pairwise"] = client.configure(config_str=PAIRWISE, config_name="pref").strategy_id
        for _ in range(8):
            trial = client.ask().trials[0]
            first, second = trial.stimuli
            utility = [-((float(s["x"]) - 0.7) ** 2) - (float(s["y"]) - 0.3) ** 2 for s in (first, second)]  # type: ignore[arg-type]
            client.tell(trial_id=trial.trial_id, outcome=int(utility[0] > utility[1]))
        client.ask()
        sweep = {"algorithm": "SARSA", "metaParameters": {"alpha": [0.1, 0.2, 0.4, 0.8], "policy": ["greedy", "soft"]}}
        ids["sweep"] = client.configure_sweep(sweep, runs=3, config_name="sarsa").strategy_id
        for trial in client.sweep(ids["sweep"], ttl=60):
            with trial:
                alpha, soft = float(trial.params["alpha"]), trial.params["policy"] == "soft"  # type: ignore[arg-type]
                final = 1 - (math.log2(alpha) + 2.5) ** 2 / 4 + 0.3 * soft + rng.gauss(0, 0.05)
                trial.report({"return": [final / 2, final]})
    yield srv, ids
    srv.stop()


def _png(fig: object, path: Path) -> tuple[int, int]:
    fig.savefig(path, format="png")  # type: ignore[attr-defined]
    return png_size(path.read_bytes())


@pytest.mark.parametrize(
    ("strategy", "kind", "options", "markers"),
    [
        ("threshold", "field", {}, lambda done, free: done),
        ("threshold", "field", {"x": "a", "y": "c"}, lambda done, free: done),
        ("threshold", "slice", {}, lambda done, free: done * free),
        ("threshold", "slice", {"x": "a", "fixed": {"c": 0.5}}, lambda done, free: done),
        ("threshold", "history", {}, lambda done, free: (done + 1) * free),
        ("regression", "best", {}, lambda done, free: done),
        ("regression", "slice", {"x": "lr"}, lambda done, free: done),
        ("pairwise", "utility", {}, lambda done, free: done * free),
        ("pairwise", "auto", {}, lambda done, free: done * free),
        ("sweep", "auto", {}, lambda done, free: 12),  # 4 alphas x 3 runs at the best policy
        ("sweep", "sweep", {"x": "policy", "fixed": {"alpha": 0.4}}, lambda done, free: 6),
        ("sweep", "history", {}, lambda done, free: 24 * 2),
    ],
)
def test_client_plot_each_kind(experiment: tuple[ServerThread, dict[str, int]], tmp_path: Path, strategy: str, kind: str, options: dict, markers: object) -> None:
    srv, ids = experiment
    with pc.Client(srv.address, timeout=120) as client:
        sid = ids[strategy]
        done = len(client.list_trials(state="completed", strategy_id=sid))
        free = len(client.parameters(sid))
        fig = client.plot(kind, strategy_id=sid, size=(7, 4.5), **options)
    assert _png(fig, tmp_path / f"{strategy}-{kind}.png") == (700, 450)
    assert count_trial_markers(fig) == markers(done, free)  # type: ignore[operator]
    if strategy == "sweep" and kind != "history":
        title = fig.axes[0].get_title()
        assert "return over " + options.get("x", "alpha") in title and ("policy=soft" in title or "x" in options)
    if kind == "field":
        ax = fig.axes[0]
        assert ax.get_xlabel() == options.get("x", "c") and ax.get_ylabel() == options.get("y", "a")


async def test_async_client_plot(experiment: tuple[ServerThread, dict[str, int]], tmp_path: Path) -> None:
    srv, ids = experiment
    async with pc.AsyncClient(srv.address, timeout=120) as client:
        fig = await client.plot("field", strategy_id=ids["threshold"])
    assert _png(fig, tmp_path / "async.png") == (800, 600)
    assert count_trial_markers(fig) == 14


def test_plot_options_are_checked(experiment: tuple[ServerThread, dict[str, int]]) -> None:
    srv, ids = experiment
    with pc.Client(srv.address, timeout=60) as client:
        cases = [
            ({"kind": "field", "x": "nope"}, "x"),
            ({"kind": "field", "x": "c", "y": "c"}, "y"),
            ({"kind": "slice", "fixed": {"c": 5}}, "fixed.c"),
            ({"kind": "slice", "fixed": {"zz": 1}}, "fixed.zz"),
            ({"kind": "best"}, "kind"),
            ({"kind": "utility"}, "kind"),
            ({"kind": "pie"}, "kind"),
        ]
        for kwargs, field in cases:
            with pytest.raises(PlotError) as err:
                client.plot(strategy_id=ids["threshold"], **kwargs)
            assert err.value.field == field, (kwargs, err.value)
        sweep_cases = [
            ({"kind": "field"}, "kind"),
            ({"kind": "sweep", "x": "beta"}, "x"),
            ({"kind": "sweep", "y": "loss"}, "y"),
            ({"kind": "sweep", "fixed": {"alpha": 0.3}}, "fixed.alpha"),
        ]
        for kwargs, field in sweep_cases:
            with pytest.raises(PlotError) as err:
                client.plot(strategy_id=ids["sweep"], **kwargs)
            assert err.value.field == field, (kwargs, err.value)


def test_offline_plot_from_journal(experiment: tuple[ServerThread, dict[str, int]], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    srv, ids = experiment
    db = srv.options.db
    out = tmp_path / "offline-field.png"
    assert cli_main(["plot", "--db", db, "--strategy", "P01", "-o", str(out), "--kind", "field", "--fixed", "c=0", "--x", "a", "--y", "c"]) == 0
    assert png_size(out.read_bytes()) == (800, 600)
    svg = tmp_path / "history.svg"
    assert cli_main(["plot", "--db", db, "--strategy", str(ids["threshold"]), "-o", str(svg), "--kind", "history", "--width", "6", "--height", "4"]) == 0
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and 'width="432pt" height="288pt"' in text
    best = tmp_path / "best.png"
    assert cli_main(["plot", "--db", db, "--strategy", "opt", "-o", str(best)]) == 0  # auto: best so far
    assert png_size(best.read_bytes()) == (800, 600)
    capsys.readouterr()
    assert cli_main(["plot", "--db", db, "--strategy", "P01", "-o", str(tmp_path / "x.png"), "--x", "nope"]) == 2
    assert "x: unknown parameter 'nope'" in capsys.readouterr().err
    assert cli_main(["plot", "--db", db, "--strategy", "P01", "-o", str(tmp_path / "x.gif")]) == 2
    assert "--output" in capsys.readouterr().err
    assert cli_main(["plot", "--db", db, "--strategy", "P01", "-o", str(tmp_path / "x.png"), "--fixed", "c"]) == 2
    assert "PARAM=VALUE" in capsys.readouterr().err
    assert cli_main(["plot", "--db", db, "--strategy", "nobody", "-o", str(tmp_path / "x.png")]) == 1
    assert cli_main(["plot", "--db", str(tmp_path / "missing.db"), "--strategy", "1", "-o", str(tmp_path / "x.png")]) == 1
