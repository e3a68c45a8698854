"""AEPsych JSON/TCP compatibility: the real aepsych_client, raw sockets (Unity/MATLAB shapes, framing),
two connections at once, gRPC interplay, and a SIGKILL restart."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import math
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aepsych_client import AEPsychClient
from aepsych_client.client import ServerError

import psyserve_client as pc
from conftest import CONFIGS, ServerThread, free_port, spawn_server
from psyserve.app import ServerOptions
from psyserve.transports.aepsych_tcp import RequestFramer, start_aepsych_server

SOBOL_MANUAL = (CONFIGS / "sobol_manual.ini").read_text()
THRESHOLD = (CONFIGS / "threshold_2d.ini").read_text()
SECOND = """
[common]
parnames = [level, side]
outcome_types = [binary]
strategy_names = [init, sweep]
[level]
par_type = integer
lower_bound = 0
upper_bound = 20
[side]
par_type = categorical
choices = [left, right]
[init]
generator = SobolGenerator
min_asks = 3
min_total_outcome_occurrences = 0
[sweep]
generator = RandomGenerator
max_asks = 50
"""
PAIRWISE = """
[common]
parnames = [x, y]
stimuli_per_trial = 2
outcome_types = [binary]
strategy_names = [init]
[x]
lower_bound = 0
upper_bound = 10
[y]
lower_bound = -1
upper_bound = 1
[init]
generator = SobolGenerator
max_asks = 10
"""


@pytest.fixture
def aep(db_path: str) -> Iterator[ServerThread]:
    """A server (no model pool) that also speaks AEPsych's protocol; its port is `aep.aepsych_port`."""
    srv = ServerThread(ServerOptions(port=0, db=db_path, models=False, aepsych_port=0))
    srv.aepsych_port = srv.running.extra[0].port  # type: ignore[attr-defined]
    yield srv
    srv.stop()


@contextlib.contextmanager
def aepsych_client(port: int) -> Iterator[AEPsychClient]:
    client = AEPsychClient(ip="127.0.0.1", port=port)
    assert client.socket is not None
    client.socket.settimeout(20)
    try:
        yield client
    finally:
        client.socket.close()
        client.finalize = lambda: {}  # type: ignore[method-assign]  # its __del__ sends exit on a closed socket


class Raw:
    """A bare socket that reads a stream of concatenated JSON replies."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = ""

    def send(self, data: bytes | str | dict[str, Any]) -> None:
        if isinstance(data, dict):
            data = json.dumps(data)
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def replies(self, n: int = 1) -> list[dict[str, Any]]:
        decoder, out = json.JSONDecoder(), []
        while len(out) < n:
            self.buffer = self.buffer.lstrip()
            if self.buffer:
                try:
                    obj, end = decoder.raw_decode(self.buffer)
                except json.JSONDecodeError:
                    pass
                else:
                    out.append(obj)
                    self.buffer = self.buffer[end:]
                    continue
            chunk = self.sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} of {n} replies"
            self.buffer += chunk.decode("utf-8")
        return out

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        self.send(request)
        return self.replies(1)[0]

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def check_sobol_manual_config(config: dict[str, list[Any]]) -> None:
    assert set(config) == {"contrast", "frequency", "shape", "eye"}
    assert all(isinstance(v, list) and len(v) == 1 for v in config.values())
    assert isinstance(config["contrast"][0], float) and 0.001 <= config["contrast"][0] <= 1
    assert type(config["frequency"][0]) is int and 1 <= config["frequency"][0] <= 16
    assert config["shape"][0] in ("circle", "square", "gabor")
    assert config["eye"][0] in (0, 1) and type(config["eye"][0]) is int


# ---------------------------------------------------------------------- the real client
def test_full_experiment_with_aepsych_client(aep: ServerThread, tmp_path: Path) -> None:
    ini = tmp_path / "experiment.ini"
    ini.write_text(SOBOL_MANUAL)
    port = aep.aepsych_port  # type: ignore[attr-defined]
    with aepsych_client(port) as client:
        assert client.configure(config_path=str(ini), config_name="p01") == {"strat_id": 1}
        assert client.configure(config_str=SECOND, config_name="p02") == {"strat_id": 2}
        assert client.configs == [1, 2] and client.config_names == {"p01": 1, "p02": 2}
        assert client.info()["all_strat_names"] == ["init", "sweep"]
        assert client.resume(config_name="p01") == {"strat_id": 1}

        contrasts, phases, finished = [], [], False
        while not finished:
            ask = client.ask()
            assert set(ask) == {"config", "is_finished", "num_points"} and ask["num_points"] == 1
            check_sobol_manual_config(ask["config"])
            phases.append(client.info()["current_strat_name"])
            contrasts.append(ask["config"]["contrast"][0])
            told = client.tell(config=ask["config"], outcome=len(contrasts) % 2, rt=0.4)
            assert told == {"trials_recorded": 1, "model_data_added": 1}
            finished = ask["is_finished"]
            assert len(contrasts) < 20
        assert len(contrasts) == 9 and phases == ["init_strat"] * 6 + ["manual_strat"] * 3
        assert contrasts[6:] == [0.5, 0.25, 0.125]

        info = client.info()
        assert info == {
            "db_name": "journal.db",
            "exp_id": 1,
            "strat_id": 1,
            "strat_count": 2,
            "all_strat_names": ["init_strat", "manual_strat"],
            "current_strat_index": 1,
            "current_strat_name": "manual_strat",
            "current_strat_data_pts": 9,
            "current_strat_model": "",
            "current_strat_acqf": "",
            "current_strat_finished": True,
            "current_strat_can_fit": True,
        }
        assert client.parameters() == {"contrast": [0.001, 1.0], "frequency": [1.0, 16.0], "shape": [0, 2], "eye": [0, 1]}
        whole = client.get_config()
        assert set(whole) == {"common", "contrast", "frequency", "shape", "eye", "init_strat", "manual_strat", "metadata"}
        assert whole["common"]["parnames"] == "[contrast, frequency, shape, eye]"
        assert client.get_config(section="init_strat", property="min_asks") == {"init_strat": {"min_asks": "6"}}
        with pytest.raises(ServerError, match="no property 'nope'"):
            client.get_config(section="init_strat", property="nope")
        with pytest.raises(ServerError, match="no model"):
            client.query("max")
        with pytest.raises(ServerError, match="binary"):
            client.tell(config={"contrast": 0.5, "frequency": 2, "shape": "circle", "eye": 0}, outcome=2)

        # the other experiment, by id: its own parameters and phases
        assert client.resume(config_id=2) == {"strat_id": 2}
        ask = client.ask()
        assert set(ask["config"]) == {"level", "side"} and ask["config"]["side"][0] in ("left", "right")
        assert type(ask["config"]["level"][0]) is int
        assert client.tell(config=ask["config"], outcome=1) == {"trials_recorded": 1, "model_data_added": 1}
        assert client.finish_strategy() == {"finished_strategy": "init", "finished_strat_idx": 0}
        assert client.info()["current_strat_finished"]
        many = client.ask(num_points=3)
        assert many["num_points"] == 3 and all(len(v) == 3 for v in many["config"].values())
        assert client.info()["current_strat_name"] == "sweep"
        told = client.tell(config=many["config"], outcome=[0, 1, 1], model_data=False, rt=[0.1, 0.2, 0.3])
        assert told == {"trials_recorded": 3, "model_data_added": 0}
        assert client.info()["current_strat_data_pts"] == 1

        assert client.resume(config_name="p01") == {"strat_id": 1}
        assert client.info()["current_strat_data_pts"] == 9
        assert client.finalize() == {"termination_type": "Terminate", "success": True}

    with pc.Client(aep.address, timeout=10) as grpc_client:
        trials = grpc_client.list_trials(strategy_id=1)
        assert [t.state for t in trials] == ["completed"] * 9 and [t.trial_id for t in trials] == list(range(1, 10))
        assert all(t.metadata == {"rt": "0.4"} for t in trials)
        assert trials[6].params == {"contrast": 0.5, "frequency": 2, "shape": "circle", "eye": False}
        second = grpc_client.list_trials(strategy_id=2)
        assert len(second) == 4 and all(t.state == "completed" for t in second)
        assert [t.metadata for t in second[1:]] == [{"rt": "0.1"}, {"rt": "0.2"}, {"rt": "0.3"}]
        assert [t.outcomes[0].value for t in second[1:]] == [0.0, 1.0, 1.0]


def test_two_connections_at_once_and_grpc_interplay(aep: ServerThread) -> None:
    port = aep.aepsych_port  # type: ignore[attr-defined]
    barrier = threading.Barrier(2, timeout=20)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(label: str, config: str, names: set[str]) -> None:
        try:
            with aepsych_client(port) as client:
                sid = client.configure(config_str=config)["strat_id"]
                barrier.wait()  # both configured before either asks: each keeps its own current strategy
                for i in range(12):
                    ask = client.ask()
                    assert set(ask["config"]) == names
                    client.tell(config=ask["config"], outcome=i % 2)
                    time.sleep(0.001)
                info = client.info()
                assert info["strat_id"] == sid and info["current_strat_data_pts"] == 12
                results[label] = sid
                client.finalize()
        except BaseException as exc:  # reported in the main thread
            errors.append(exc)

    threads = [
        threading.Thread(
            target=run,
            args=("a", SOBOL_MANUAL.replace("min_asks = 6", "min_asks = 20"), {"contrast", "frequency", "shape", "eye"}),
        ),
        threading.Thread(target=run, args=("b", SECOND, {"level", "side"})),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert sorted(results.values()) == [1, 2]

    with pc.Client(aep.address, timeout=10) as grpc_client:
        summaries = {s.strategy_id: s for s in grpc_client.list_strategies()}
        assert set(summaries) == {1, 2} and all(s.trials_completed == 12 for s in summaries.values())
        made = grpc_client.configure(config_str=PAIRWISE, config_name="from-grpc").strategy_id
    assert made == 3
    with aepsych_client(port) as client:
        with pytest.raises(ServerError, match="setup or resume"):
            client.ask()
        client.configs.append(made)  # the client only resumes ids it has seen
        assert client.resume(config_id=made) == {"strat_id": made}
        ask = client.ask()
        assert ask["num_points"] == 1 and all(len(v) == 1 and len(v[0]) == 2 for v in ask["config"].values())
        with pytest.raises(ServerError, match="pairwise trial's outcome is 0"):
            client.tell(config=ask["config"], outcome=2)
        # AEPsych's convention: 1 = the second stimulus preferred (psyserve stores 1 = first preferred)
        assert client.tell(config=ask["config"], outcome=1)["trials_recorded"] == 1
        with pytest.raises(ServerError, match="no strategy named"):
            client._send_recv({"type": "resume", "message": {"name": "nope"}})
        assert client._send_recv({"type": "resume", "message": {"name": "from-grpc"}}) == {"strat_id": made}
        with pytest.raises(ServerError, match="strategy_id 99 not found"):
            client._send_recv({"type": "resume", "message": {"strat_id": 99}})
    with pc.Client(aep.address, timeout=10) as grpc_client:
        trials = grpc_client.list_trials(strategy_id=made)
        # the told pair completed the asked trial (no second, unasked trial)
        assert [(t.trial_id, t.state) for t in trials] == [(1, "completed")] and len(trials[0].stimuli) == 2
        assert [o.value for o in trials[0].outcomes] == [0.0]  # the second won: first-preferred is 0


# ---------------------------------------------------------------------- raw sockets
def test_raw_socket_shapes_and_framing(aep: ServerThread) -> None:
    port = aep.aepsych_port  # type: ignore[attr-defined]
    raw = Raw(port)
    try:
        assert "setup or resume" in raw.call({"type": "ask", "message": ""})["server_error"]
        # config_dict is rendered to INI (lists, nested manual points, booleans)
        config_dict = {
            "common": {"parnames": ["x", "kind"], "outcome_types": ["binary"], "strategy_names": ["init", "manual"]},
            "x": {"par_type": "continuous", "lower_bound": 0, "upper_bound": 10, "log_scale": False},
            "kind": {"par_type": "categorical", "choices": ["a", "b"]},
            "init": {"generator": "SobolGenerator", "min_asks": 2, "min_total_outcome_occurrences": 0},
            "manual": {"generator": "ManualGenerator", "points": [[1.5, "a"], [2.5, "b"]]},
        }
        setup = raw.call({"type": "setup", "version": "0.8.0", "message": {"config_dict": config_dict}})
        sid = setup["strat_id"]
        assert raw.call({"type": "get_config", "message": {"section": "manual", "property": "points"}}) == {
            "manual": {"points": "[[1.5, 'a'], [2.5, 'b']]"}
        }
        assert raw.call({"type": "can_model", "message": {}}) == {"can_model": False}

        # Unity: a tell with extra_info, stored as the asked trial's metadata
        ask = raw.call({"type": "ask", "message": ""})
        assert ask["num_points"] == 1 and set(ask["config"]) == {"x", "kind"}
        unity_tell = {
            "type": "tell",
            "message": {"config": ask["config"], "outcome": 1.0},
            "extra_info": {"responseTime": 0.52, "participantID": "P7"},
        }
        assert raw.call(unity_tell) == {"trials_recorded": 1, "model_data_added": 1}

        # one request split over three packets
        request = json.dumps({"type": "ask", "message": {"num_points": 1}}).encode()
        for part in (request[:5], request[5:17], request[17:]):
            raw.send(part)
            time.sleep(0.05)
        ask = raw.replies(1)[0]
        assert ask["num_points"] == 1
        # scalar config values (one trial), an extra key as metadata
        scalar_config = {k: v[0] for k, v in ask["config"].items()}
        told = raw.call({"type": "tell", "message": {"config": scalar_config, "outcome": 0, "rt": 0.3}})
        assert told == {"trials_recorded": 1, "model_data_added": 1}
        assert raw.call({"type": "can_model", "message": {}}) == {"can_model": True}

        # two requests in one packet: two replies, in order
        raw.send(json.dumps({"type": "parameters", "message": {}}) + json.dumps({"type": "info", "message": {}}))
        parameters, info = raw.replies(2)
        assert parameters == {"x": [0.0, 10.0], "kind": [0, 1]}
        assert info["current_strat_data_pts"] == 2 and info["strat_id"] == sid

        # garbage: one error, then the connection still answers
        raw.send(b"\x00\xffnot json at all")
        garbage = raw.replies(1)[0]
        assert "not a JSON object" in garbage["server_error"] and "message" in garbage
        raw.send(b'{"type": "info", "message": {}, oops}')
        assert "not valid JSON" in raw.replies(1)[0]["server_error"]
        # MATLAB appends a newline
        raw.send(json.dumps({"type": "ask", "message": {"num_points": 1}}) + "\n")
        manual = raw.replies(1)[0]
        assert manual["config"] == {"x": [1.5], "kind": ["a"]}
        raw.send(json.dumps({"type": "tell", "message": {"config": manual["config"], "outcome": 1}}) + "\n")
        assert raw.replies(1)[0]["trials_recorded"] == 1

        # errors name the field and echo the request
        bad = {"type": "tell", "message": {"config": {"x": [11.0], "kind": ["a"]}, "outcome": 1}}
        reply = raw.call(bad)
        assert "outside its bounds" in reply["server_error"] and "'x'" in reply["server_error"] and reply["message"] == bad
        assert "unknown request type 'fly'" in raw.call({"type": "fly", "message": {}})["server_error"]
        assert "num_points" in raw.call({"type": "ask", "message": {"num_points": "two"}})["server_error"]
        assert "outcome" in raw.call({"type": "tell", "message": {"config": manual["config"]}})["server_error"]
        too_big = raw.call({"type": "setup", "message": {"config_str": "[common]\n#" + "x" * 6000}})
        assert "server_error" in too_big and len(json.dumps(too_big)) < 4096

        assert raw.call({"type": "exit", "message": ""}) == {"termination_type": "Terminate", "success": True}
        assert raw.closed_by_server()
    finally:
        raw.close()

    with pc.Client(aep.address, timeout=10) as grpc_client:
        trials = grpc_client.list_trials(strategy_id=sid)
        assert [t.state for t in trials] == ["completed"] * 3
        assert trials[0].metadata == {"responseTime": "0.52", "participantID": "P7"}
        assert trials[1].metadata == {"rt": "0.3"} and trials[1].outcomes[0].value == 0.0


def test_slow_requests_and_oversized_buffers_close_the_connection(aep: ServerThread) -> None:
    strict = aep.call(start_aepsych_server(aep.running.service, "127.0.0.1", 0, request_timeout=0.5, max_request_bytes=2000))
    port = strict.port
    try:
        idle = Raw(port)
        slow = Raw(port)
        slow.send(b'{"type": "info", "mess')  # a request that never finishes
        t0 = time.monotonic()
        assert slow.closed_by_server() and time.monotonic() - t0 < 3
        time.sleep(0.3)  # an idle connection (nothing half-sent) is kept past the timeout
        assert "setup or resume" in idle.call({"type": "info", "message": {}})["server_error"]
        big = Raw(port)
        big.send(b'{"type": "setup", "message": {"config_str": "' + b"x" * 3000)
        assert "larger than 2000 bytes" in big.replies(1)[0]["server_error"]
        assert big.closed_by_server()
        # close(): stops accepting and ends idle connections promptly
        t0 = time.monotonic()
        aep.call(strict.close())
        assert time.monotonic() - t0 < 2 and idle.closed_by_server()
        with pytest.raises(OSError):
            Raw(port)
    finally:
        aep.call(strict.close())


def test_close_answers_the_request_in_flight(aep: ServerThread, monkeypatch: pytest.MonkeyPatch) -> None:
    service = aep.running.service
    server = aep.call(start_aepsych_server(service, "127.0.0.1", 0))
    port = server.port
    real_configure = service.configure

    async def slow_configure(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.5)
        return await real_configure(*args, **kwargs)

    monkeypatch.setattr(service, "configure", slow_configure)
    busy, idle = Raw(port), Raw(port)
    try:
        busy.send({"type": "setup", "message": {"config_str": SECOND}})
        time.sleep(0.2)  # the setup is in flight
        closing = asyncio.run_coroutine_threadsafe(server.close(), aep.loop)
        assert idle.closed_by_server()  # idle connections end at once
        assert busy.replies(1)[0] == {"strat_id": 1}  # the one in flight is answered, then closed
        assert busy.closed_by_server()
        closing.result(5)
    finally:
        busy.close()
        idle.close()


def test_framer_waits_for_every_proper_prefix() -> None:
    """Every cut of valid requests (escapes, non-ASCII, numbers, literals) waits; the whole comes out once."""
    requests = [
        {"type": "tell", "message": {"config": {"x": [1.25e-07], "s": ["caf\u00e9 \U0001f600"]}, "outcome": -0.5, "ok": True}},
        {"a": [[], {}, None, False, float("nan"), float("-inf"), 10, 'q"\\\n\u0001']},
    ]
    for text in [json.dumps(r) for r in requests] + [json.dumps(r, ensure_ascii=False) for r in requests]:
        data = text.encode()
        for cut in range(1, len(data)):
            framer = RequestFramer()
            assert framer.feed(data[:cut]) == [] and framer.pending, data[:cut]
            frames = framer.feed(data[cut:])
            assert len(frames) == 1 and frames[0].request is not None and not framer.pending
    framer = RequestFramer()
    frames = framer.feed(b'junk {"type": \'ask\'} {"a": tru} {"type": "info"}' + b"[" * 5000 + b'{"type": "ask"}')
    # one error for the run of garbage before "info", one for the brackets before "ask"
    assert [f.request for f in frames] == [None, {"type": "info"}, None, {"type": "ask"}]
    assert frames[0].text == "junk " and frames[2].error == "request is not a JSON object"
    assert framer.feed(b"") == [] and not framer.pending


# ---------------------------------------------------------------------- restart
def test_sigkill_restart_resume_over_tcp(tmp_path: Path) -> None:
    db, log = str(tmp_path / "journal.db"), tmp_path / "server.log"
    aport = free_port()

    def connect() -> AEPsychClient:
        deadline = time.monotonic() + 10
        while True:  # the AEPsych port opens just after gRPC's
            try:
                return AEPsychClient(ip="127.0.0.1", port=aport)
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    proc = spawn_server(db, log, "--no-models", "--aepsych-port", str(aport))
    told: list[dict[str, Any]] = []
    try:
        client = connect()
        with contextlib.closing(client.socket):
            client.configure(config_str=SOBOL_MANUAL)
            sid = client.configure(config_str=SOBOL_MANUAL, config_name="run")["strat_id"]
            for i in range(4):
                ask = client.ask()
                client.tell(config=ask["config"], outcome=i % 2, trial=i)
                told.append(ask["config"])
            pending = client.ask()["config"]  # asked, not told, when the server dies
            client.finalize = lambda: {}  # type: ignore[method-assign]
        proc.kill(signal.SIGKILL)
    finally:
        if proc.proc.poll() is None:
            proc.kill()
    assert sid == 2

    proc = spawn_server(db, log, "--no-models", "--aepsych-port", str(aport), port=proc.port)
    try:
        client = connect()
        with contextlib.closing(client.socket):
            client.configs.append(sid)
            assert client.resume(config_id=sid) == {"strat_id": sid}
            assert client.info()["current_strat_data_pts"] == 4
            assert client.tell(config=pending, outcome=1, trial=4) == {"trials_recorded": 1, "model_data_added": 1}
            finished, count = False, 5
            while not finished:
                ask = client.ask()
                client.tell(config=ask["config"], outcome=count % 2, trial=count)
                finished, count = ask["is_finished"], count + 1
            assert count == 9 and client.info()["current_strat_finished"]
            assert client.finalize() == {"termination_type": "Terminate", "success": True}
            client.finalize = lambda: {}  # type: ignore[method-assign]
        with pc.Client(proc.address, timeout=10) as grpc_client:
            trials = grpc_client.list_trials(strategy_id=sid)
            assert [t.trial_id for t in trials] == list(range(1, 10)) and all(t.state == "completed" for t in trials)
            assert [t.metadata["trial"] for t in trials] == [str(i) for i in range(9)]
            assert [t.params["contrast"] for t in trials[:4]] == [c["contrast"][0] for c in told]
            assert grpc_client.list_trials(strategy_id=1) == []
    finally:
        proc.kill(signal.SIGTERM)


# ---------------------------------------------------------------------- model phase
def detection(config: dict[str, list[float]], rng: np.random.Generator) -> int:
    c, a = config["c"][0], config["a"][0]
    return int(rng.random() < 0.5 + 0.5 / (1 + math.exp(-6 * (c - 0.3 * a))))


@pytest.mark.skipif(importlib.util.find_spec("psyserve.modeling") is None, reason="model engine not installed")
def test_model_phase_and_queries(tmp_path: Path) -> None:
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "m.db"), models=True, workers=1, aepsych_port=0))
    rng = np.random.default_rng(5)
    try:
        with aepsych_client(srv.running.extra[0].port) as client:
            client.configure(config_str=THRESHOLD)
            model_asks = 0
            while model_asks < 3:  # 10 Sobol (until both outcomes are seen), then the model phase
                ask = client.ask()
                assert all(isinstance(v[0], float) and -1 <= v[0] <= 1 for v in ask["config"].values())
                model_asks += client.info()["current_strat_name"] == "opt_strat"
                client.tell(config=ask["config"], outcome=detection(ask["config"], rng))
                assert client.info()["current_strat_data_pts"] < 30
            info = client.info()
            assert info["current_strat_name"] == "opt_strat" and info["current_strat_model"] == "GPClassificationModel"
            assert info["current_strat_acqf"] == "MCLevelSetEstimation" and info["current_strat_can_fit"]
            assert client._send_recv({"type": "can_model", "message": {}}) == {"can_model": True}

            top = client.query("max", probability_space=True)
            assert set(top) == {"query_type", "probability_space", "constraints", "x", "y"}
            assert top["query_type"] == "max" and top["probability_space"] is True
            assert set(top["x"]) == {"c", "a"} and len(top["y"]) == 1 and 0 <= top["y"][0] <= 1
            latent = client.query("min")
            assert latent["probability_space"] is False and len(latent["y"]) == 1
            predicted = client.query("prediction", probability_space=True, x={"c": [-0.9, 0.0, 0.9], "a": [0.0, 0.0, 0.0]})
            assert predicted["x"]["c"] == pytest.approx([-0.9, 0.0, 0.9]) and predicted["x"]["a"] == pytest.approx([0.0] * 3)
            assert len(predicted["y"]) == 3
            assert all(0 <= p <= 1 for p in predicted["y"])
            inverse = client.query("inverse", probability_space=True, y=0.75, constraints={1: 0.25})
            assert inverse["x"]["a"] == [0.25] and inverse["constraints"] == {"1": 0.25}
            by_name = client.query("inverse", probability_space=True, y=0.75, constraints={"a": -0.5})
            assert by_name["x"]["a"] == [-0.5] and -1 <= by_name["x"]["c"][0] <= 1
            with pytest.raises(ServerError, match="parameter index 7"):
                client.query("max", constraints={7: 0.0})
    finally:
        srv.stop()


def test_multi_trial_tell_is_all_or_nothing(aep: ServerThread) -> None:
    port = aep.aepsych_port  # type: ignore[attr-defined]
    with aepsych_client(port) as client:
        client.configure(config_str=SOBOL_MANUAL)
        good = {"contrast": 0.5, "frequency": 2, "shape": "circle", "eye": 0}
        bad = {"contrast": 7.0, "frequency": 2, "shape": "circle", "eye": 0}
        two = {k: [good[k], bad[k]] for k in good}
        with pytest.raises(ServerError) as err:
            client.tell(config=two, outcome=[1, 0])
        assert "tells[1]" in str(err.value) and "contrast" in str(err.value)
        ok = {k: [good[k], good[k]] for k in good}
        assert client.tell(config=ok, outcome=[1, 0]) == {"trials_recorded": 2, "model_data_added": 2}
    with pc.Client(aep.address) as grpc_client:
        strategy = grpc_client.list_strategies()[0]
        assert strategy.trials_completed == 2  # nothing from the rejected tell


def test_random_messages_of_every_type_get_one_reply_each(aep: ServerThread) -> None:
    """Hypothesis throws random and boundary JSON at every request type: each request gets exactly
    one JSON object back (a result or server_error), and the connection keeps serving."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    port = aep.aepsych_port  # type: ignore[attr-defined]
    raw = Raw(port)
    assert "strat_id" in raw.call({"type": "setup", "message": {"config_str": SOBOL_MANUAL}})
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),  # JSON has no NaN; the server must still cope with huge numbers
        st.text(max_size=20),
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    names = st.sampled_from(["contrast", "frequency", "shape", "eye", "nope", "0", "1"])
    messages = st.one_of(
        values,
        st.dictionaries(
            st.sampled_from(
                [
                    "config",
                    "outcome",
                    "num_points",
                    "fixed_pars",
                    "query_type",
                    "x",
                    "y",
                    "constraints",
                    "strat_id",
                    "section",
                    "property",
                    "model_data",
                    "config_str",
                    "config_dict",
                ]
            ),
            values,
            max_size=4,
        ),
        st.fixed_dictionaries({"config": st.dictionaries(names, values, max_size=4), "outcome": values}),
    )
    types = st.sampled_from(
        [
            "setup",
            "ask",
            "tell",
            "query",
            "parameters",
            "info",
            "get_config",
            "finish_strategy",
            "resume",
            "can_model",
            "nope",
            "",
        ]
    )

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(types, messages)
    def one(kind: str, message: Any) -> None:
        reply = raw.call({"type": kind, "message": message})
        assert isinstance(reply, dict) and reply, reply

    one()
    info = raw.call({"type": "info", "message": {}})
    assert "current_strat_name" in info or "server_error" in info
    assert raw.call({"type": "parameters", "message": {}})
    raw.close()
    with pc.Client(aep.address) as client:
        assert client.list_strategies()
