"""Ax-style optimisation through the real server and psyserve_client.ax.AxClient: typed configs,
Ax's raw_data forms, constraints, attach/fail/abandon, concurrency, restart, Pareto front."""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import psyserve_client as pc
from conftest import ServerThread, free_port, spawn_server
from psyserve.app import ServerOptions
from psyserve_client.ax import AxClient, GenerationStrategy, ObjectiveProperties

CHEAP = {"num_restarts": 2, "raw_samples": 64}  # keeps each model ask cheap on CI's two cores

_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8], [17, 8, 0.05, 10, 0.1, 14]])
_P = 1e-4 * np.array(
    [[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991], [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]]
)
_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def hartmann6(x: np.ndarray) -> float:
    return float(-np.sum(_ALPHA * np.exp(-np.sum(_A * (x - _P) ** 2, axis=1))))


def branin(x1: float, x2: float) -> float:
    return float((x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10)


def currin(u1: float, u2: float) -> float:
    factor = 1 - math.exp(-1 / (2 * max(u2, 1e-9)))
    return float(factor * (2300 * u1**3 + 1900 * u1**2 + 2092 * u1 + 60) / (100 * u1**3 + 500 * u1**2 + 4 * u1 + 20))


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """One model server for the module (each test uses its own named experiment)."""
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path_factory.mktemp("ax") / "ax.db"), workers=2))
    yield srv
    srv.stop()


def unit_params(d: int) -> list[dict[str, Any]]:
    return [{"name": f"x{i}", "type": "range", "bounds": [0.0, 1.0]} for i in range(1, d + 1)]


# ---------------------------------------------------------------------- Ax's tutorial, unchanged
@pytest.mark.slow
def test_ax_tutorial_loop_hartmann6(model_server: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ax's Service API tutorial loop (Hartmann6, 30 trials) as written, against the server."""
    monkeypatch.setenv("PSYSERVE_ADDRESS", model_server.address)
    # --- Ax's Service API tutorial (only the import differs; CHEAP keeps CI's share small, and Ax's
    # random_seed makes the run repeatable: an unseeded one is a draw, and a test must not be) ---
    ax_client = AxClient(random_seed=7)
    ax_client.create_experiment(
        name="hartmann_test_experiment",
        parameters=[
            {"name": "x1", "type": "range", "bounds": [0.0, 1.0], "value_type": "float", "log_scale": False},
            {"name": "x2", "type": "range", "bounds": [0.0, 1.0]},
            {"name": "x3", "type": "range", "bounds": [0.0, 1.0]},
            {"name": "x4", "type": "range", "bounds": [0.0, 1.0]},
            {"name": "x5", "type": "range", "bounds": [0.0, 1.0]},
            {"name": "x6", "type": "range", "bounds": [0.0, 1.0]},
        ],
        objectives={"hartmann6": ObjectiveProperties(minimize=True)},
        parameter_constraints=["x1 + x2 <= 2.0"],
        outcome_constraints=["l2norm <= 1.25"],
        choose_generation_strategy_kwargs=CHEAP,
    )

    def evaluate(parameterization: dict[str, Any]) -> dict[str, tuple[float, float]]:
        x = np.array([parameterization.get(f"x{i + 1}") for i in range(6)])
        return {"hartmann6": (hartmann6(x), 0.0), "l2norm": (float(np.sqrt((x**2).sum())), 0.0)}

    seen = []
    for _ in range(30):
        parameterization, trial_index = ax_client.get_next_trial()
        seen.append(parameterization)
        ax_client.complete_trial(trial_index=trial_index, raw_data=evaluate(parameterization))
    frame = ax_client.get_trials_data_frame()
    best_parameters, values = ax_client.get_best_parameters()
    means, covariances = values
    # --- checks ---
    assert len(frame) == 30 and set(frame["trial_status"]) == {"COMPLETED"}
    assert list(frame["trial_index"]) == list(range(30))
    assert all(p["x1"] + p["x2"] <= 2.0 + 1e-9 for p in seen)
    best_x = np.array([best_parameters[f"x{i}"] for i in range(1, 7)])
    assert float(np.sqrt((best_x**2).sum())) <= 1.25  # observed: the best point satisfies the constraint
    assert means["l2norm"] <= 1.25 and set(covariances) == {"hartmann6", "l2norm"}
    observed = [evaluate(p) for p in seen]
    feasible = [o["hartmann6"][0] for o in observed if o["l2norm"][0] <= 1.25]
    assert abs(means["hartmann6"] - evaluate(best_parameters)["hartmann6"][0]) < 0.05  # in-sample, noiseless
    assert evaluate(best_parameters)["hartmann6"][0] <= np.percentile(feasible, 10)
    trace = ax_client.get_trace()
    known = [v for v in trace if not math.isnan(v)]  # NaN until the first feasible trial
    assert len(trace) == 30 and all(b <= a + 1e-12 for a, b in itertools.pairwise(known))
    assert trace[-1] == pytest.approx(min(feasible))
    assert trace[-1] < -1.0  # 18 model-based trials make progress beyond the 12 quasi-random ones


# ---------------------------------------------------------------------- outcomes
def test_raw_data_forms_metadata_and_sample_size(server: ServerThread) -> None:
    client = AxClient(address=server.address)
    client.create_experiment(
        name="forms",
        parameters=unit_params(2),
        objectives={"y": ObjectiveProperties(minimize=True)},
        choose_generation_strategy_kwargs={"method": "random_search"},
    )
    forms: list[tuple[Any, float, float | None]] = [
        (1.5, 1.5, None),  # a mean: noise inferred
        ((2.5, 0.1), 2.5, 0.1),  # (mean, sem)
        ((3.5, 0.0), 3.5, 0.0),  # sem 0: noiseless
        ({"y": (4.5, 0.2)}, 4.5, 0.2),  # {metric: (mean, sem)}
        ({"y": 5.5}, 5.5, None),  # {metric: mean}
        (np.float64(6.5), 6.5, None),  # numpy scalars too
        ((7.5, None), 7.5, None),  # (mean, None): unknown SEM
    ]
    for raw, _, _ in forms:
        _, index = client.get_next_trial()
        client.complete_trial(index, raw, metadata={"operator": "ann"}, sample_size=12)
    with pc.Client(server.address) as plain:
        trials = plain.list_trials(strategy_id=client.strategy_id)
        raw_trials = plain._stub.ListTrials(pc._common.pb.ListTrialsRequest(strategy_id=client.strategy_id)).trials
    for trial, raw_trial, (_, mean, sem) in zip(trials, raw_trials, forms, strict=True):
        assert trial.state == "completed"
        assert [(o.name, o.value, o.sem) for o in trial.outcomes] == [("y", mean, sem)]
        assert trial.metadata == {"operator": "ann"} and raw_trial.sample_size == 12
    with pytest.raises(ValueError, match="expected \\(mean, sem\\)"):
        client.complete_trial(0, (1.0, 2.0, 3.0))
    _, index = client.get_next_trial()
    with pytest.raises(pc.InvalidArgumentError) as err:
        client.complete_trial(index, (1.0, -1.0))
    assert err.value.field == "outcomes[0].sem"


def test_missing_metric_refused_naming_it(server: ServerThread) -> None:
    client = AxClient(address=server.address)
    client.create_experiment(
        name="metrics",
        parameters=unit_params(2),
        objectives={"a": ObjectiveProperties(minimize=False)},
        outcome_constraints=["b <= 1.0"],
        tracking_metric_names=["c"],
        choose_generation_strategy_kwargs={"method": "random_search"},
    )
    _, index = client.get_next_trial()
    with pytest.raises(pc.InvalidArgumentError, match=r"missing metric\(s\) \['b'\]") as err:
        client.complete_trial(index, {"a": 1.0})
    assert err.value.field == "outcomes"
    with pytest.raises(pc.InvalidArgumentError, match=r"missing metric\(s\) \['b'\]"):
        client.complete_trial(index, 1.0)  # a bare mean goes to the objective; b is still missing
    with pytest.raises(pc.InvalidArgumentError, match="unknown metric 'z'") as err:
        client.complete_trial(index, {"a": 1.0, "b": 0.5, "z": 3.0})
    assert err.value.field == "outcomes[2].name"
    assert client.get_trials_data_frame()["trial_status"].tolist() == ["RUNNING"]  # nothing recorded
    client.complete_trial(index, {"a": 1.0, "b": 0.5})  # tracking metric c is optional
    _, second = client.get_next_trial()
    client.complete_trial(second, {"a": (2.0, 0.1), "b": 0.4, "c": 7.0})
    frame = client.get_trials_data_frame()
    assert frame["a"].tolist() == [1.0, 2.0] and math.isnan(frame["c"][0]) and frame["c"][1] == 7.0


# ---------------------------------------------------------------------- typed config <-> INI, bad input
def test_typed_parameters_and_ini_equivalence(server: ServerThread) -> None:
    client = AxClient(address=server.address, random_seed=7)
    client.create_experiment(
        name="typed",
        parameters=[
            {"name": "lr", "type": "range", "bounds": [1e-4, 1e-1], "log_scale": True, "digits": 5},
            {"name": "layers", "type": "range", "bounds": [1, 8]},
            {"name": "batch", "type": "choice", "values": [16, 32, 64], "is_ordered": True},
            {"name": "act", "type": "choice", "values": ["relu", "tanh"]},
            {"name": "opt", "type": "fixed", "value": "adam"},
            {"name": "x", "type": "range", "bounds": [0.0, 10.0]},
            {"name": "w", "type": "range", "bounds": [0.0, 10.0]},
        ],
        objectives={"loss": ObjectiveProperties(minimize=True)},
        parameter_constraints=["x + 2*w <= 10", "x >= w"],
        choose_generation_strategy_kwargs={"method": "random_search"},
    )
    for _ in range(20):
        p, index = client.get_next_trial()
        assert isinstance(p["layers"], int) and 1 <= p["layers"] <= 8
        assert p["batch"] in (16, 32, 64) and isinstance(p["batch"], int)
        assert p["act"] in ("relu", "tanh") and p["opt"] == "adam"
        assert 1e-4 <= p["lr"] <= 1e-1 and p["lr"] == round(p["lr"], 5)
        assert p["x"] + 2 * p["w"] <= 10 + 1e-9 and p["x"] >= p["w"] - 1e-9  # Sobol by rejection
        client.complete_trial(index, float(p["x"]))
    with pc.Client(server.address) as plain:
        sections = plain.get_config(strategy_id=client.strategy_id)
        ini = "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {v}" for k, v in values.items()) for s, values in sections.items())
        assert sections["optimization"]["parameter_constraints"] == "[x + 2*w <= 10, x >= w]"
        again = plain.configure(config_str=ini, config_name="typed-as-ini")
        assert again.warnings == []
        first = plain._stub.Resume(pc._common.pb.ResumeRequest(strategy_id=client.strategy_id)).summary
        second = plain._stub.Resume(pc._common.pb.ResumeRequest(strategy_id=again.strategy_id)).summary
        assert first.optimization == second.optimization and list(first.parameters) == list(second.parameters)
        assert list(first.optimization.parameter_constraints) == ["x + 2.0*w <= 10.0", "-x + w <= 0.0"]
        # the INI form replays the same quasi-random sequence (same seed, same constraints)
        first_trial = plain.list_trials(strategy_id=client.strategy_id)[0].params
        assert plain.ask(strategy_id=again.strategy_id).trials[0].params == first_trial


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"parameter_constraints": ["x1 + q <= 1"]}, "experiment.parameters", "unknown parameter 'q'"),
        ({"parameter_constraints": ["x1 + x2 <= -1"]}, "experiment.parameters", "no point within the parameter bounds"),
        ({"outcome_constraints": ["m <= 5%"]}, "experiment.parameters", "relative outcome constraints"),
        ({"outcome_constraints": ["m < 5"]}, "experiment.parameters", "expected 'metric <= bound'"),
        ({"outcome_constraints": ["y <= 5"]}, "experiment.parameters", "is the objective"),
    ],
)
def test_bad_typed_configs_name_the_entry(server: ServerThread, kwargs: dict[str, Any], field: str, message: str) -> None:
    client = AxClient(address=server.address)
    with pytest.raises(pc.InvalidArgumentError, match=message) as err:
        client.create_experiment(parameters=unit_params(2), objectives={"y": ObjectiveProperties(minimize=True)}, **kwargs)
    assert err.value.field is not None and "optimization" in err.value.field


def test_bad_parameters_and_ini_errors(server: ServerThread) -> None:
    client = AxClient(address=server.address)
    with pytest.raises(pc.InvalidArgumentError, match="log scale") as err:
        client.create_experiment(
            parameters=[{"name": "a", "type": "range", "bounds": [1.0, 10.0], "log_scale": True}, *unit_params(1)],
            objectives={"y": ObjectiveProperties(minimize=True)},
            parameter_constraints=["a + x1 <= 5"],
        )
    assert err.value.field == "config_ini[optimization].parameter_constraints"
    with pytest.raises(ValueError, match="unsupported key"):
        client.create_experiment(parameters=[{"name": "a", "type": "range", "bounds": [0, 1], "is_fidelity": True}], objectives={"y": ObjectiveProperties(True)})
    with pytest.raises(pc.InvalidArgumentError) as err:
        client.create_experiment(parameters=[{"name": "1a", "type": "range", "bounds": [0.0, 1.0]}], objectives={"y": ObjectiveProperties(True)})
    assert err.value.field == "experiment.parameters[0].name"
    ini = "[common]\nparnames = [x]\nstrategy_names = [opt]\n[x]\nlower_bound = 0\nupper_bound = 1\n"
    with pc.Client(server.address) as plain:
        bad = ini + "[optimization]\nobjectives = [a, b]\n[opt]\ngenerator = OptimizeAcqfGenerator\nmodel = ModelListGP\nacqf = qLogNoisyExpectedImprovement\n"
        with pytest.raises(pc.InvalidArgumentError, match="qLogNoisyExpectedHypervolumeImprovement") as err:
            plain.configure(config_str=bad)
        assert err.value.field == "config_ini[opt].acqf"
        no_section = ini.replace("strategy_names", "outcome_types = [continuous]\nstrategy_names") + (
            "[opt]\ngenerator = OptimizeAcqfGenerator\nmodel = ModelListGP\nacqf = qLogNoisyExpectedImprovement\n"
        )
        with pytest.raises(pc.InvalidArgumentError, match=r"needs an \[optimization\] section") as err:
            plain.configure(config_str=no_section)
        assert err.value.field == "config_ini[opt].model"


def test_max_parallelism(server: ServerThread) -> None:
    client = AxClient(address=server.address)
    client.create_experiment(
        name="parallel",
        parameters=unit_params(2),
        objectives={"y": ObjectiveProperties(minimize=True)},
        choose_generation_strategy_kwargs={"method": "random_search", "max_parallelism_override": 2},
    )
    batch, _ = client.get_next_trials(5)
    assert len(batch) == 2
    with pytest.raises(pc.FailedPreconditionError, match="max_parallelism 2") as err:
        client.get_next_trial()
    assert err.value.field == "num_points"
    client.complete_trial(min(batch), 1.0)
    assert len(client.get_next_trials(5)[0]) == 1


# ---------------------------------------------------------------------- unordered choices
def test_unordered_choice_is_modelled_by_category_not_rank(model_server: ServerThread) -> None:
    """An unordered choice goes through a categorical kernel: reordering its `values` changes
    nothing the model predicts (a rank encoding would), and the model-based ask picks the best one."""
    offsets = {"red": 0.0, "green": 1.0, "blue": 0.4, "gold": 0.9}

    def f(x: float, colour: str) -> float:
        return (x - 0.3) ** 2 + offsets[colour]

    predictions = []
    clients = []
    for name, order in (("colours-a", ["red", "green", "blue", "gold"]), ("colours-b", ["gold", "blue", "red", "green"])):
        client = AxClient(address=model_server.address, random_seed=5)
        client.create_experiment(
            name=name,
            parameters=[
                {"name": "x", "type": "range", "bounds": [0.0, 1.0]},
                {"name": "colour", "type": "choice", "values": order, "is_ordered": False},
            ],
            objectives={"y": ObjectiveProperties(minimize=True)},
            choose_generation_strategy_kwargs={"num_initialization_trials": 1, **CHEAP},
        )
        for x in (0.05, 0.5, 0.95):
            for colour in offsets:
                _, index = client.attach_trial({"x": x, "colour": colour})
                client.complete_trial(index, (f(x, colour), 0.0))
        predictions.append(client.get_model_predictions_for_parameterizations([{"x": 0.3, "colour": c} for c in offsets]))
        clients.append(client)
    for a, b in zip(*predictions, strict=True):
        assert a["y"][0] == pytest.approx(b["y"][0], rel=1e-4, abs=1e-4) and a["y"][1] == pytest.approx(b["y"][1], rel=1e-3, abs=1e-4)
    means = {c: p["y"][0] for c, p in zip(offsets, predictions[0], strict=True)}
    assert min(means, key=lambda c: means[c]) == "red"
    client = clients[0]
    p, index = client.get_next_trial()  # the one quasi-random trial
    client.complete_trial(index, (f(p["x"], p["colour"]), 0.0))
    p, _ = client.get_next_trial()  # model-based: each category optimised, the best kept
    assert p["colour"] == "red" and abs(p["x"] - 0.3) < 0.25


# ---------------------------------------------------------------------- trial life cycle and the model
def test_failure_abandon_and_attached_trial_used_by_model(model_server: ServerThread) -> None:
    client = AxClient(address=model_server.address, random_seed=3)
    client.create_experiment(
        name="lifecycle",
        parameters=[{"name": "x", "type": "range", "bounds": [0.0, 1.0]}],
        objectives={"y": ObjectiveProperties(minimize=True)},
        choose_generation_strategy_kwargs={"num_initialization_trials": 4, **CHEAP},
    )
    for _ in range(4):
        p, index = client.get_next_trial()
        client.complete_trial(index, ((p["x"] - 0.3) ** 2, 0.0))
    _, failed = client.get_next_trial()
    client.log_trial_failure(failed, metadata={"error": "OOM"})
    _, abandoned = client.get_next_trial()
    client.abandon_trial(abandoned, reason="operator stopped it")
    with pytest.raises(pc.FailedPreconditionError):
        client.complete_trial(failed, 0.0)
    params, attached = client.attach_trial({"x": 0.9})
    assert params == {"x": 0.9} and attached == 6
    assert client.get_trial_parameters(attached) == {"x": 0.9}
    client.complete_trial(attached, (-1.0, 0.0))  # far better than anything generated
    frame = client.get_trials_data_frame()
    assert frame["trial_status"].tolist() == ["COMPLETED"] * 4 + ["FAILED", "ABANDONED", "COMPLETED"]
    (prediction,) = client.get_model_predictions_for_parameterizations([{"x": 0.9}])
    mean, sem = prediction["y"]
    assert abs(mean - (-1.0)) < 0.05 and sem < 0.1  # the model was fitted on the attached trial
    best, (means, _) = client.get_best_parameters()
    assert best == {"x": 0.9} and means["y"] == pytest.approx(-1.0, abs=0.05)
    observed = client.get_best_parameters(use_model_predictions=False)
    assert observed is not None and observed[0] == {"x": 0.9} and observed[1][0]["y"] == -1.0
    assert client.get_trace()[-1] == -1.0 and len(client.get_trace()) == 5  # failed and abandoned are no data
    p, index = client.get_next_trial()  # model-based, with the attached trial in the data
    assert index == 7 and 0.0 <= p["x"] <= 1.0


def test_four_workers_asking_at_once_get_distinct_feasible_points(model_server: ServerThread) -> None:
    lead = AxClient(address=model_server.address, random_seed=11)
    lead.create_experiment(
        name="crowd",
        parameters=[{"name": "x1", "type": "range", "bounds": [-5.0, 10.0]}, {"name": "x2", "type": "range", "bounds": [0.0, 15.0]}],
        objectives={"branin": ObjectiveProperties(minimize=True)},
        parameter_constraints=["x1 + x2 <= 10"],
        choose_generation_strategy_kwargs={"num_initialization_trials": 5, **CHEAP},
    )
    for _ in range(5):
        p, index = lead.get_next_trial()
        lead.complete_trial(index, (branin(p["x1"], p["x2"]), 0.0))
    results: list[tuple[dict[str, Any], int]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        try:
            mine = AxClient(address=model_server.address)
            mine.load_experiment_from_database("crowd")
            barrier.wait(30)
            results.append(mine.get_next_trial())
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    points = np.array([[p["x1"], p["x2"]] for p, _ in results])
    assert sorted(i for _, i in results) == [5, 6, 7, 8]
    distances = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1) + np.eye(4)
    assert distances.min() > 1e-3, points  # pending points are X_pending: nobody gets a duplicate
    assert all(x1 + x2 <= 10 + 1e-9 for x1, x2 in points)  # the optimiser honours the constraint


# ---------------------------------------------------------------------- restart
@pytest.mark.slow
def test_sigkill_mid_loop_loses_nothing_and_resumes_by_name(tmp_path: Path) -> None:
    db, log = str(tmp_path / "kill.db"), tmp_path / "server.log"
    port = free_port()
    server = spawn_server(db, log, "--workers", "1", port=port)
    try:
        client = AxClient(address=server.address)
        client.create_experiment(
            name="durable",
            parameters=unit_params(2),
            objectives={"y": ObjectiveProperties(minimize=True)},
            outcome_constraints=["c <= 1.5"],
            choose_generation_strategy_kwargs={"num_initialization_trials": 4, **CHEAP},
        )
        told = {}
        for _ in range(6):
            p, index = client.get_next_trial()
            told[index] = {"y": ((p["x1"] - 0.5) ** 2 + p["x2"], 0.01), "c": (p["x1"] + p["x2"], 0.0)}
            client.complete_trial(index, told[index])
        pending_params, pending = client.get_next_trial()
        server.kill()
        server = spawn_server(db, log, "--workers", "1", port=port)
        again = AxClient(address=server.address)
        again.load_experiment_from_database("durable")
        frame = again.get_trials_data_frame()
        assert frame["trial_status"].tolist() == ["COMPLETED"] * 6 + ["RUNNING"]
        assert frame["y"].tolist()[:6] == [told[i]["y"][0] for i in range(6)]
        assert again.get_trial_parameters(pending) == pending_params
        again.complete_trial(pending, {"y": (0.3, 0.01), "c": (0.2, 0.0)})
        for _ in range(2):
            p, index = again.get_next_trial()
            again.complete_trial(index, {"y": ((p["x1"] - 0.5) ** 2 + p["x2"], 0.01), "c": (p["x1"] + p["x2"], 0.0)})
        frame = again.get_trials_data_frame()
        assert frame["trial_index"].tolist() == list(range(9)) and set(frame["trial_status"]) == {"COMPLETED"}
        assert len(again.get_trace()) == 9
    finally:
        server.kill()


# ---------------------------------------------------------------------- several objectives
def dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether minimised point a is dominated by b."""
    return b[0] <= a[0] and b[1] <= a[1] and b != a


def test_branin_currin_pareto_front_is_non_dominated(model_server: ServerThread) -> None:
    client = AxClient(address=model_server.address, random_seed=5)
    client.create_experiment(
        name="branincurrin",
        parameters=[{"name": "u1", "type": "range", "bounds": [0.0, 1.0]}, {"name": "u2", "type": "range", "bounds": [0.0, 1.0]}],
        objectives={"branin": ObjectiveProperties(minimize=True, threshold=18.0), "currin": ObjectiveProperties(minimize=True, threshold=6.0)},
        choose_generation_strategy_kwargs={"num_initialization_trials": 6, **CHEAP},
    )
    values: dict[int, tuple[float, float]] = {}
    for _ in range(10):
        p, index = client.get_next_trial()
        values[index] = (branin(15 * p["u1"] - 5, 15 * p["u2"]), currin(p["u1"], p["u2"]))
        client.complete_trial(index, {"branin": (values[index][0], 0.0), "currin": (values[index][1], 0.0)})
    observed = client.get_pareto_optimal_parameters(use_model_predictions=False)
    truth = {i for i, v in values.items() if not any(dominated(v, w) for w in values.values())}
    assert set(observed) == truth
    for index, (_, (means, _)) in observed.items():
        assert (means["branin"], means["currin"]) == pytest.approx(values[index])
    predicted = client.get_pareto_optimal_parameters()
    assert predicted and set(predicted) <= set(values)
    front = [(m["branin"], m["currin"]) for _, (m, _) in predicted.values()]
    assert not any(dominated(a, b) for a in front for b in front)
    with pytest.raises(pc.FailedPreconditionError, match="Pareto front"):
        client.get_best_parameters()
    trace = client.get_trace()
    assert len(trace) == 10 and all(b >= a - 1e-9 for a, b in itertools.pairwise(trace) if not math.isnan(a))


def test_generation_strategy_object_and_old_objective_api(server: ServerThread) -> None:
    client = AxClient(generation_strategy=GenerationStrategy(method="random_search", seed=4), address=server.address)
    client.create_experiment(parameters=unit_params(1), objective_name="score", minimize=False, name="old-api")
    _p, index = client.get_next_trial()
    client.complete_trial(index, 0.5)
    assert client.objective_names == ["score"]
    with pc.Client(server.address) as plain:
        summary = plain._stub.Resume(pc._common.pb.ResumeRequest(name="old-api")).summary
    assert not summary.optimization.objectives[0].minimize and summary.optimization.generation_strategy.seed == 4
