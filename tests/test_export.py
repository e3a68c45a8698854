"""`psyserve export` and `psyserve replay` (run as subprocesses) on a journal written by a real server."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread, spawn_server
from psyserve.export import METADATA_COLUMNS, TRIAL_COLUMNS
from psyserve.strategy import OutcomeValue

SOBOL_MANUAL = (CONFIGS / "sobol_manual.ini").read_text()  # contrast (log), frequency (int), shape (cat), eye (bin)
PAIRWISE = """
[common]
parnames = [x, y]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init]
[x]
lower_bound = 10
upper_bound = 20
[y]
par_type = categorical
choices = [red, green]
[init]
generator = SobolGenerator
min_asks = 100
"""
TWO_OUTCOMES = """
[common]
parnames = [level]
outcome_types = [continuous, continuous]
outcome_names = [rt, score]
strategy_names = [sweep]
[level]
lower_bound = -5
upper_bound = 5
[sweep]
generator = ManualGenerator
points = [[-5], [0], [5]]
"""


def psyserve(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "psyserve", *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def event_count(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])


class Experiment:
    """What the test server was told, to compare the export with."""

    def __init__(self, server: ServerThread) -> None:
        self.asked: dict[tuple[int, int], pc.Trial] = {}
        with pc.Client(server.address, timeout=10) as client:
            self.a = client.configure(config_str=SOBOL_MANUAL, config_name="A", metadata={"participant_id": "P07"}).strategy_id
            trials = client.ask(num_points=4).trials
            self.asked.update({(self.a, t.trial_id): t for t in trials})
            client.tell(trial_id=trials[0].trial_id, outcome=1, rt=0.52, key="left")
            client.tell(trial_id=trials[1].trial_id, outcome=0, model_data=False)
            client.abandon_trial(trials[2].trial_id, reason="participant blinked")
            # trials[3] stays pending
            self.by_stimulus = client.tell(
                config={"contrast": 0.5, "frequency": 3, "shape": "gabor", "eye": True}, outcome=1
            ).trial_id

            self.b = client.configure(config_str=PAIRWISE, config_name="B").strategy_id
            pair = client.ask().trials[0]
            self.asked[(self.b, pair.trial_id)] = pair
            client.tell(trial_id=pair.trial_id, outcome=1)

            self.c = client.configure(config_str=TWO_OUTCOMES).strategy_id
            point = client.ask().trials[0]
            self.asked[(self.c, point.trial_id)] = point
        outcomes = [OutcomeValue("rt", 0.75, sem=0.125), OutcomeValue("score", 3.0)]
        server.call(server.running.service.tell(self.c, outcomes, trial_id=point.trial_id))
        self.total = 5 + 1 + 1


@pytest.fixture
def experiment(server: ServerThread) -> Experiment:
    return Experiment(server)


def read_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def test_csv_export_of_a_live_database(server: ServerThread, experiment: Experiment, db_path: str) -> None:
    before = event_count(db_path)
    header, rows = read_csv(psyserve("export", "--db", db_path, "--format", "csv").stdout)
    assert event_count(db_path) == before  # reading never writes

    a_params = ["param.contrast", "param.frequency", "param.shape", "param.eye"]
    b_params = ["param.x.0", "param.x.1", "param.y.0", "param.y.1"]
    assert header == [
        *TRIAL_COLUMNS,
        *a_params,
        "outcome.outcome",
        "sem.outcome",
        *b_params,
        "param.level",
        "outcome.rt",
        "sem.rt",
        "outcome.score",
        "sem.score",
        *METADATA_COLUMNS,
    ]
    assert len(rows) == experiment.total
    assert [(int(r["strategy_id"]), int(r["trial_id"])) for r in rows] == [
        (experiment.a, 1), (experiment.a, 2), (experiment.a, 3), (experiment.a, 4), (experiment.a, 5),
        (experiment.b, 1), (experiment.c, 1),
    ]  # fmt: skip
    a = {int(r["trial_id"]): r for r in rows if int(r["strategy_id"]) == experiment.a}

    # raw units, exactly as handed out by Ask
    for tid in (1, 2, 3, 4):
        asked = experiment.asked[(experiment.a, tid)].params
        row = a[tid]
        assert float(row["param.contrast"]) == asked["contrast"] and 0.001 <= asked["contrast"] <= 1  # type: ignore[operator]
        assert row["param.frequency"] == str(asked["frequency"])
        assert row["param.shape"] == asked["shape"]
        assert row["param.eye"] == ("true" if asked["eye"] else "false")
        assert row["strategy_name"] == "A" and row["phase_name"] == "init_strat" and row["phase_index"] == "0"
        assert json.loads(row["strategy_metadata"])["participant_id"] == "P07"
        assert row["asked"] == "true"
        assert datetime.fromisoformat(row["asked_at"]).timestamp() == pytest.approx(float(row["asked_at_epoch"]), abs=1e-5)
    # states, outcomes and metadata
    assert [a[t]["state"] for t in (1, 2, 3, 4, 5)] == ["completed", "completed", "abandoned", "pending", "completed"]
    assert a[1]["outcome.outcome"] == "1.0" and a[2]["outcome.outcome"] == "0.0" and a[4]["outcome.outcome"] == ""
    assert a[1]["sem.outcome"] == ""
    assert json.loads(a[1]["metadata"]) == {"rt": "0.52", "key": "left"}
    assert a[1]["model_data"] == "true" and a[2]["model_data"] == "false" and a[4]["model_data"] == ""
    assert json.loads(a[3]["metadata"]) == {"abandon_reason": "participant blinked"}
    assert a[4]["told_at"] == "" and a[1]["told_at"] and float(a[1]["told_at_epoch"]) >= float(a[1]["asked_at_epoch"])
    # a stimulus told without an ask
    assert experiment.by_stimulus == 5
    assert a[5]["asked"] == "false" and a[5]["asked_at"] == "" and a[5]["told_at"]
    assert (a[5]["param.contrast"], a[5]["param.frequency"], a[5]["param.shape"], a[5]["param.eye"]) == (
        "0.5",
        "3",
        "gabor",
        "true",
    )
    # pairwise: one column per stimulus; other strategies' columns stay empty
    b = next(r for r in rows if int(r["strategy_id"]) == experiment.b)
    pair = experiment.asked[(experiment.b, 1)]
    assert [float(b["param.x.0"]), float(b["param.x.1"])] == [s["x"] for s in pair.stimuli]
    assert [b["param.y.0"], b["param.y.1"]] == [s["y"] for s in pair.stimuli]
    assert b["param.contrast"] == "" and b["outcome.rt"] == ""
    # several named outcomes with a SEM
    c = next(r for r in rows if int(r["strategy_id"]) == experiment.c)
    assert (c["param.level"], c["outcome.rt"], c["sem.rt"], c["outcome.score"], c["sem.score"]) == (
        "-5.0",
        "0.75",
        "0.125",
        "3.0",
        "",
    )

    with pc.Client(server.address, timeout=10) as client:  # the server did not notice
        assert client.ask(strategy_id=experiment.a).trials[0].trial_id == 6


def test_jsonl_export_and_strategy_filter(experiment: Experiment, db_path: str, tmp_path: Path) -> None:
    lines = psyserve("export", "--db", db_path, "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == experiment.total
    first = rows[0]
    assert set(first) == {
        *TRIAL_COLUMNS,
        "param.contrast",
        "param.frequency",
        "param.shape",
        "param.eye",
        "outcome.outcome",
        "sem.outcome",
        *METADATA_COLUMNS,
    }
    assert first["metadata"] == {"rt": "0.52", "key": "left"} and first["strategy_metadata"]["participant_id"] == "P07"
    assert first["param.contrast"] == experiment.asked[(experiment.a, 1)].params["contrast"]
    assert isinstance(first["param.frequency"], int) and isinstance(first["param.eye"], bool)
    pending = rows[3]
    assert pending["state"] == "pending" and pending["outcome.outcome"] is None and pending["told_at"] is None

    by_id = [
        json.loads(x)
        for x in psyserve("export", "--db", db_path, "--format", "jsonl", "--strategy", str(experiment.b)).stdout.splitlines()
    ]
    assert [(r["strategy_id"], r["trial_id"]) for r in by_id] == [(experiment.b, 1)]
    out = tmp_path / "a.csv"
    result = psyserve("export", "--db", db_path, "--strategy", "A", "--output", str(out))
    assert "exported 5 trials" in result.stderr and result.stdout == ""
    header, rows_a = read_csv(out.read_text())
    assert len(rows_a) == 5 and {r["strategy_name"] for r in rows_a} == {"A"}
    assert "param.x.0" not in header  # only the chosen strategy's columns


def test_export_errors(experiment: Experiment, db_path: str, tmp_path: Path) -> None:
    missing = psyserve("export", "--db", str(tmp_path / "none.db"), check=False)
    assert missing.returncode == 1 and "no journal database" in missing.stderr
    assert not (tmp_path / "none.db").exists()
    unknown = psyserve("export", "--db", db_path, "--strategy", "99", check=False)
    assert unknown.returncode == 1 and "99" in unknown.stderr
    unknown_name = psyserve("replay", "--db", db_path, "--strategy", "nobody", check=False)
    assert unknown_name.returncode == 1 and "nobody" in unknown_name.stderr


def test_export_writes_nothing_even_with_expired_leases(tmp_path: Path) -> None:
    """A lease that expired while the server was down is not abandoned by an export, only by the server
    once it runs again."""
    db, log = str(tmp_path / "j.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models")
    try:
        with pc.Client(proc.address, timeout=10) as client:
            client.configure(config_str=SOBOL_MANUAL)
            client.ask(ttl_seconds=0.5)
    finally:
        proc.kill()
    time.sleep(0.6)
    before = event_count(db)
    rows = [json.loads(x) for x in psyserve("export", "--db", db, "--format", "jsonl").stdout.splitlines()]
    assert [r["state"] for r in rows] == ["pending"]
    assert event_count(db) == before
    proc = spawn_server(db, log, "--no-models", port=proc.port)  # the server itself expires it on restart
    try:
        with pc.Client(proc.address, timeout=10) as client:
            deadline = time.monotonic() + 5
            while client.list_trials(strategy_id=1)[0].state != "abandoned" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert client.list_trials(strategy_id=1)[0].state == "abandoned"
    finally:
        proc.kill()


def test_replay_counts_of_a_non_model_strategy(experiment: Experiment, db_path: str) -> None:
    text = psyserve("replay", "--db", db_path, "--strategy", "A").stdout
    assert f"strategy {experiment.a} 'A'" in text
    assert "trials: 5 (3 completed, 1 pending, 1 abandoned, 0 failed; 1 told without an ask; 2 model data points)" in text
    assert "0 init_strat (SobolGenerator): 4 asks, 5 trials, open  <- next ask" in text
    assert "1 manual_strat (ManualGenerator): 0 asks, 0 trials, open" in text
    assert "outcome (binary): 3 told; 0: 1, 1: 2" in text
    assert "participant_id=P07" in text
    assert "model" not in text.split("outcomes:")[1]  # no model phase, no model section

    summary: dict[str, Any] = json.loads(psyserve("replay", "--db", db_path, "--strategy", str(experiment.c), "--json").stdout)
    assert summary["trials"]["completed"] == 1 and summary["trials"]["pending"] == 0
    rt = summary["outcomes"][0]
    assert (rt["name"], rt["n"], rt["mean"]) == ("rt", 1, 0.75)


@pytest.mark.slow
def test_replay_refits_the_model(tmp_path: Path) -> None:
    """A threshold experiment (P(yes) rises steeply at c = 0): replay fits the GP and finds the threshold near c = 0."""
    db, log = str(tmp_path / "j.db"), tmp_path / "server.log"
    proc = spawn_server(db, log, "--no-models")
    try:
        with pc.Client(proc.address, timeout=10) as client:
            client.configure(config_str=(CONFIGS / "threshold_2d.ini").read_text(), config_name="thr")
            for trial in client.ask(num_points=10).trials:  # the Sobol phase needs no model
                client.tell(trial_id=trial.trial_id, outcome=int(float(trial.params["c"]) > 0))
            for i in range(30):
                c, a = -1 + 2 * (i % 10) / 9, -1 + 2 * (i // 10) / 2
                client.tell(config={"c": c, "a": a}, outcome=int(c > 0))
    finally:
        proc.kill()
    text = psyserve("replay", "--db", db, "--strategy", "thr").stdout
    assert "1 opt_strat (OptimizeAcqfGenerator, GPClassificationModel, MCLevelSetEstimation): 0 asks" in text
    assert "model: refitted in" in text and "max estimate: p=" in text
    summary = json.loads(psyserve("replay", "--db", db, "--strategy", "thr", "--json").stdout)
    model = summary["model"]
    assert model["fitted"] and "error" not in model, model
    assert model["max"]["probability"] > 0.75 and model["max"]["x"]["c"] > 0
    threshold = model["threshold"]
    assert threshold["target"] == 0.75
    assert -0.5 < threshold["x"]["c"] < 0.5, threshold
    assert abs(threshold["probability"] - 0.75) < 0.1
