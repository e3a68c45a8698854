"""The HTTP port (Connect JSON/binary, gRPC-Web) against a real server on free loopback ports, with httpx."""

from __future__ import annotations

import base64
import json
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY
from urllib.parse import unquote

import grpc
import httpx
import pytest
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from test_aepsych_wire import Raw

import psyserve_client as pc
from conftest import CONFIGS, ServerThread, free_port, spawn_server
from psyserve.app import ServerOptions
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb

SOBOL_MANUAL = (CONFIGS / "sobol_manual.ini").read_text()
SERVICE = "/psyserve.v1.ExperimentService"
ORIGIN = "http://127.0.0.1:9"  # a page origin the server is told to allow (nothing listens there)


class Http:
    """Calls one server's HTTP port as Connect unary RPCs in JSON or binary protobuf."""

    def __init__(self, port: int, codec: str = "json", token: str | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.codec = codec
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.base, timeout=30, headers=headers)

    def raw(self, method: str, body: bytes, content_type: str, **headers: str) -> httpx.Response:
        return self.client.post(f"{SERVICE}/{method}", content=body, headers={"content-type": content_type, **headers})

    def post(self, method: str, request: Message) -> httpx.Response:
        if self.codec == "json":
            return self.raw(method, json_format.MessageToJson(request).encode(), "application/json")
        return self.raw(method, request.SerializeToString(), "application/proto")

    def call(self, method: str, request: Message, reply: type[Message]) -> Any:
        response = self.post(method, request)
        assert response.status_code == 200, response.text
        expected_type = "application/json" if self.codec == "json" else "application/proto"
        assert response.headers["content-type"] == expected_type
        if self.codec == "json":
            return json_format.Parse(response.content, reply())
        return reply.FromString(response.content)

    def error(self, method: str, request: Message) -> tuple[int, dict[str, Any]]:
        response = self.post(method, request)
        assert response.headers["content-type"] == "application/json"  # Connect unary errors are JSON in either codec
        return response.status_code, response.json()

    def close(self) -> None:
        self.client.close()


def violations(error: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, description) of the google.rpc.BadRequest in a Connect error body, decoded from its bytes."""
    out = []
    for detail in error.get("details", []):
        assert detail["type"] == "google.rpc.BadRequest"
        raw = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
        decoded = error_details_pb2.BadRequest.FromString(raw)
        pairs = [(v.field, v.description) for v in decoded.field_violations]
        assert detail["debug"] == {"fieldViolations": [{"field": f, "description": d} for f, d in pairs]}
        out.extend(pairs)
    return out


@pytest.fixture
def http_server(db_path: str) -> Iterator[ServerThread]:
    srv = ServerThread(ServerOptions(port=0, db=db_path, models=False, http_port=0, aepsych_port=0, cors_origins=(ORIGIN,)))
    yield srv
    srv.stop()


def http_port(srv: ServerThread) -> int:
    return int(srv.running.http.port)


# ---------------------------------------------------------------------- every unary RPC, both codecs
@pytest.mark.parametrize("codec", ["json", "proto"])
def test_every_unary_rpc(http_server: ServerThread, codec: str) -> None:
    http = Http(http_port(http_server), codec)
    try:
        made = http.call(
            "Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL, name="p01", metadata={"lab": "B"}), pb.ConfigureResponse
        )
        sid = made.strategy_id
        assert sid == 1 and [p.name for p in made.parameters] == ["contrast", "frequency", "shape", "eye"]
        assert made.summary.metadata["lab"] == "B" and made.summary.phases[0].name == "init_strat"
        assert http.call("Resume", pb.ResumeRequest(name="p01"), pb.ResumeResponse).summary.strategy_id == sid
        assert http.call("Resume", pb.ResumeRequest(strategy_id=sid), pb.ResumeResponse).summary.name == "p01"
        finished = False
        for n in range(9):  # 6 Sobol + 3 manual
            ask = http.call("Ask", pb.AskRequest(strategy_id=sid), pb.AskResponse)
            trial = ask.trials[0]
            assert trial.trial_id == n + 1 and trial.state == pb.TRIAL_STATE_PENDING
            values = trial.stimuli[0].values
            assert set(values) == {"contrast", "frequency", "shape", "eye"} and 0.001 <= values["contrast"].number <= 1
            assert (
                values["shape"].category in ("circle", "square", "gabor") and values["frequency"].WhichOneof("kind") == "integer"
            )
            told = http.call(
                "Tell",
                pb.TellRequest(
                    strategy_id=sid, trial_id=trial.trial_id, outcomes=[pb.Outcome(value=n % 2)], metadata={"rt": "0.4"}
                ),
                pb.TellResponse,
            )
            assert told.trial_id == trial.trial_id and told.trials_completed == n + 1
            finished = told.is_finished
        assert finished
        # a tell by stimulus (not asked for) gets its own trial
        stim = pb.Stimulus(
            values={
                "contrast": pb.ParameterValue(number=0.2),
                "frequency": pb.ParameterValue(integer=3),
                "shape": pb.ParameterValue(category="gabor"),
                "eye": pb.ParameterValue(flag=True),
            }
        )
        told = http.call(
            "Tell",
            pb.TellRequest(strategy_id=sid, stimuli=pb.StimulusList(stimuli=[stim]), outcomes=[pb.Outcome(value=0)]),
            pb.TellResponse,
        )
        assert told.trial_id == 10 and told.trials_completed == 10
        info = http.call("Info", pb.InfoRequest(strategy_id=sid), pb.InfoResponse)
        assert info.all_strat_names == ["init_strat", "manual_strat"] and info.current_strat_data_pts == 10
        params = http.call("Parameters", pb.ParametersRequest(strategy_id=sid), pb.ParametersResponse)
        assert [p.type for p in params.parameters][:2] == [pb.PARAMETER_TYPE_CONTINUOUS, pb.PARAMETER_TYPE_INTEGER]
        got = http.call(
            "GetConfig", pb.GetConfigRequest(strategy_id=sid, section="init_strat", property="min_asks"), pb.GetConfigResponse
        )
        assert got.sections["init_strat"].values == {"min_asks": "6"}
        listed = http.call("ListStrategies", pb.ListStrategiesRequest(), pb.ListStrategiesResponse)
        assert [s.strategy_id for s in listed.strategies] == [sid]
        trials = http.call("ListTrials", pb.ListTrialsRequest(strategy_id=sid), pb.ListTrialsResponse).trials
        assert [t.trial_id for t in trials] == list(range(1, 11)) and trials[0].metadata == {"rt": "0.4"}
        assert all(t.state == pb.TRIAL_STATE_COMPLETED for t in trials)
        # Query is a model question: this Sobol/manual strategy has none (the model case: test_query_over_http)
        status, error = http.error("Query", pb.QueryRequest(strategy_id=sid, query_type=pb.QUERY_TYPE_MAX))
        assert status == 400 and error["code"] == "failed_precondition"
        # a second strategy to abandon a trial of and finish
        second = http.call("Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL), pb.ConfigureResponse).strategy_id
        pending = http.call("Ask", pb.AskRequest(strategy_id=second), pb.AskResponse).trials[0]
        abandoned = http.call(
            "AbandonTrial",
            pb.AbandonTrialRequest(strategy_id=second, trial_id=pending.trial_id, reason="lost"),
            pb.AbandonTrialResponse,
        )
        assert abandoned.trial.state == pb.TRIAL_STATE_ABANDONED
        fin = http.call("FinishStrategy", pb.FinishStrategyRequest(strategy_id=second), pb.FinishStrategyResponse)
        assert fin.finished_strategy == "init_strat" and not fin.is_finished
        # the sweep RPCs, on a 2 x 2 sweep with one run
        sweep = http.call(
            "Configure",
            pb.ConfigureRequest(config_ini="[sweep]\nruns = 1\nalpha = [1.0, 0.5]\nbeta = [1, 2]\n"),
            pb.ConfigureResponse,
        ).strategy_id
        missing = http.call("ListMissingResults", pb.ListMissingResultsRequest(strategy_id=sweep), pb.ListMissingResultsResponse)
        assert list(missing.indices) == [0, 1, 2, 3]
        handed = http.call("Ask", pb.AskRequest(strategy_id=sweep), pb.AskResponse).trials[0]
        http.call(
            "Tell",
            pb.TellRequest(strategy_id=sweep, trial_id=handed.trial_id, outcomes=[pb.Outcome(name="loss", value=0.5)]),
            pb.TellResponse,
        )
        extended = http.call("ExtendSweep", pb.ExtendSweepRequest(strategy_id=sweep, runs=2), pb.ExtendSweepResponse)
        assert extended.summary.strategy_id == sweep
        results = http.call("GetSweepResults", pb.GetSweepResultsRequest(strategy_id=sweep), pb.GetSweepResultsResponse)
        assert list(results.parameter_names) == ["alpha", "beta"] and len(results.permutations) == 1
        assert results.permutations[0].metrics[0].mean == 0.5  # its sem is NaN: "NaN" in proto3 JSON
    finally:
        http.close()
    # the same data over gRPC: one service behind both ports
    with pc.Client(http_server.address, timeout=10) as client:
        assert client.resume(config_name="p01").trials_completed == 10
        assert client.list_trials(strategy_id=1)[9].params == {"contrast": 0.2, "frequency": 3, "shape": "gabor", "eye": True}


def test_hand_written_json_like_curl(http_server: ServerThread) -> None:
    """What a curl user or the C# client sends: plain JSON, int64 as a string or a number, proto field names too."""
    with httpx.Client(base_url=f"http://127.0.0.1:{http_port(http_server)}", timeout=10) as client:
        made = client.post(f"{SERVICE}/Configure", json={"configIni": SOBOL_MANUAL, "name": "curl"})
        assert made.status_code == 200 and made.json()["strategyId"] == "1"  # int64 as a string (proto3 JSON)
        ask = client.post(f"{SERVICE}/Ask", json={"strategy_id": "1", "numPoints": 2}).json()
        assert [t["trialId"] for t in ask["trials"]] == ["1", "2"] and ask["trials"][0]["state"] == "TRIAL_STATE_PENDING"
        told = client.post(f"{SERVICE}/Tell", json={"strategyId": 1, "trialId": "2", "outcomes": [{"value": 1}]}).json()
        assert told == {"trialId": "2", "trialsRecorded": 1, "modelDataAdded": 1, "trialsCompleted": "1"}  # defaults omitted
        empty = client.post(f"{SERVICE}/ListStrategies", content=b"", headers={"content-type": "application/json"})
        assert empty.status_code == 200 and [s["name"] for s in empty.json()["strategies"]] == ["curl"]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize("codec", ["json", "proto"])
def test_errors_carry_codes_and_field_names_like_grpc(http_server: ServerThread, codec: str) -> None:
    http = Http(http_port(http_server), codec)
    cases: list[tuple[str, Message, int, str, str]] = [
        ("Ask", pb.AskRequest(strategy_id=99), 404, "not_found", "strategy_id"),
        (
            "Configure",
            pb.ConfigureRequest(config_ini="[common]\nparnames = [x]\n"),
            400,
            "invalid_argument",
            "config_ini[x].lower_bound",
        ),
        ("Tell", pb.TellRequest(strategy_id=1, trial_id=5, outcomes=[pb.Outcome(value=1)]), 404, "not_found", "trial_id"),
        ("Ask", pb.AskRequest(strategy_id=1, num_points=-3), 400, "invalid_argument", "num_points"),
    ]
    try:
        assert http.call("Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL), pb.ConfigureResponse).strategy_id == 1
        with pc.Client(http_server.address, timeout=10) as client:
            stub = client._stub  # type: ignore[attr-defined]
            for method, request, status, code, field in cases:
                got_status, error = http.error(method, request)
                assert (got_status, error["code"]) == (status, code), error
                fields = violations(error)
                assert len(fields) == 1 and fields[0][0].startswith(field), fields
                assert fields[0][1] == error["message"]
                # the gRPC port says the same: code, message and field violation
                with pytest.raises(grpc.RpcError) as info:
                    getattr(stub, method)(request, timeout=10)
                assert info.value.code().name.lower() == code and info.value.details() == error["message"]
    finally:
        http.close()


def test_token_missing_or_wrong_is_unauthenticated(tmp_path: Path) -> None:
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "a.db"), models=False, http_port=0, auth_token="s3cret-token"))
    try:
        port = http_port(srv)
        for token in (None, "wrong-token"):
            http = Http(port, "json", token=token)
            status, error = http.error("ListStrategies", pb.ListStrategiesRequest())
            assert (status, error["code"]) == (401, "unauthenticated") and "Bearer" in error["message"]
            # refused before the body is parsed: garbage gets the same answer
            response = http.raw("Configure", b"{not json", "application/json")
            assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
            # gRPC-Web carries it as grpc-status 16
            reply = http.raw("ListStrategies", grpc_web_frame(b""), "application/grpc-web+proto")
            assert reply.status_code == 200 and grpc_web_messages(reply.content) == (
                [],
                {"grpc-status": "16", "grpc-message": ANY},
            )
            http.close()
        http = Http(port, "proto", token="s3cret-token")
        assert http.call("ListStrategies", pb.ListStrategiesRequest(), pb.ListStrategiesResponse).strategies == []
        assert http.raw("ListStrategies", b"", "application/json", authorization="bearer s3cret-token").status_code == 200
        http.close()
    finally:
        srv.stop()


def test_oversized_and_malformed_bodies_get_clear_errors(http_server: ServerThread) -> None:
    http = Http(http_port(http_server))
    try:
        big = http.raw("Configure", json.dumps({"configIni": "x" * (5 * 1024 * 1024)}).encode(), "application/json")
        assert big.status_code == 429 and big.json()["code"] == "resource_exhausted" and "larger than" in big.json()["message"]
        bad_json = http.raw("Ask", b'{"strategyId": 1', "application/json")
        assert bad_json.status_code == 400 and bad_json.json()["code"] == "invalid_argument"
        assert "malformed JSON" in bad_json.json()["message"]
        unknown = http.raw("Ask", b'{"strategyID": 1}', "application/json").json()
        assert unknown["code"] == "invalid_argument" and "strategyID" in unknown["message"]
        wrong_type = http.raw("Ask", b'{"strategyId": "one"}', "application/json").json()
        assert wrong_type["code"] == "invalid_argument" and "strategyId" in wrong_type["message"]
        bad_proto = http.raw("Ask", b"\xff\xff\xff\xff", "application/proto").json()
        assert bad_proto["code"] == "invalid_argument" and "AskRequest" in bad_proto["message"]
        assert http.raw("Ask", b"{}", "text/plain").status_code == 415
        assert http.raw("NoSuchMethod", b"{}", "application/json").status_code == 404
        assert http.client.get("/nowhere").status_code == 404
        # and it still serves
        made = http.call("Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL), pb.ConfigureResponse)
        assert http.call("Ask", pb.AskRequest(strategy_id=made.strategy_id), pb.AskResponse).trials[0].trial_id == 1
    finally:
        http.close()


# ---------------------------------------------------------------------- CORS
def preflight(port: int, origin: str) -> httpx.Response:
    return httpx.options(
        f"http://127.0.0.1:{port}{SERVICE}/Ask",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,authorization,x-grpc-web,connect-protocol-version",
        },
        timeout=10,
    )


def test_cors_preflight_for_allowed_and_refused_origins(http_server: ServerThread, tmp_path: Path) -> None:
    port = http_port(http_server)
    allowed = preflight(port, ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = preflight(port, "http://127.0.0.1:10")
    assert refused.status_code == 400 and "access-control-allow-origin" not in refused.headers
    # the real request from the allowed page may read the reply and the gRPC status headers
    reply = httpx.post(f"http://127.0.0.1:{port}{SERVICE}/ListStrategies", json={}, headers={"origin": ORIGIN}, timeout=10)
    assert reply.headers["access-control-allow-origin"] == ORIGIN
    assert "grpc-status" in reply.headers["access-control-expose-headers"]
    other = httpx.post(f"http://127.0.0.1:{port}{SERVICE}/ListStrategies", json={}, headers={"origin": "http://evil"}, timeout=10)
    assert "access-control-allow-origin" not in other.headers
    # nothing is allowed by default
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "c.db"), models=False, http_port=0))
    try:
        assert preflight(http_port(srv), ORIGIN).status_code == 400
    finally:
        srv.stop()
    # '*' allows any origin (no credentials mode: the token travels in a header the page sets)
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "d.db"), models=False, http_port=0, cors_origins=("*",)))
    try:
        anyone = preflight(http_port(srv), "http://anywhere.example:1234")
        assert anyone.status_code == 200 and anyone.headers["access-control-allow-origin"] == "*"
    finally:
        srv.stop()


def test_bad_cors_origin_is_refused_at_startup(tmp_path: Path) -> None:
    from psyserve.auth import AuthConfigError

    with pytest.raises(AuthConfigError, match="--cors-origin"):
        ServerOptions(http_port=0, cors_origins=("http://lab.example/",)).check_security()
    with pytest.raises(AuthConfigError, match="--http-port"):
        ServerOptions(cors_origins=("http://lab.example",)).check_security()


# ---------------------------------------------------------------------- gRPC-Web and streams
def grpc_web_frame(payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(payload)) + payload


def grpc_web_messages(body: bytes) -> tuple[list[bytes], dict[str, str]]:
    """Data frames and the trailer frame of a gRPC-Web response body."""
    messages, trailers, i = [], {}, 0
    while i < len(body):
        flag, length = body[i], struct.unpack(">I", body[i + 1 : i + 5])[0]
        chunk = body[i + 5 : i + 5 + length]
        i += 5 + length
        if flag & 0x80:
            for line in chunk.decode().split("\r\n"):
                if line:
                    key, _, value = line.partition(":")
                    trailers[key.strip().lower()] = value.strip()
        else:
            messages.append(chunk)
    return messages, trailers


@pytest.mark.parametrize("text", [False, True])
def test_grpc_web_unary_stream_and_errors(http_server: ServerThread, text: bool) -> None:
    http = Http(http_port(http_server))
    ctype = "application/grpc-web-text" if text else "application/grpc-web+proto"

    def call(method: str, request: Message) -> tuple[list[bytes], dict[str, str]]:
        body = grpc_web_frame(request.SerializeToString())
        response = http.raw(method, base64.b64encode(body) if text else body, ctype, **{"x-grpc-web": "1"})
        assert response.status_code == 200 and response.headers["content-type"].startswith(ctype.split("+")[0])
        return grpc_web_messages(base64.b64decode(response.content) if text else response.content)

    try:
        [made], trailers = call("Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL, name="web"))
        assert trailers["grpc-status"] == "0" and pb.ConfigureResponse.FromString(made).strategy_id == 1
        for _ in range(3):
            [asked], _ = call("Ask", pb.AskRequest(strategy_id=1))
            trial = pb.AskResponse.FromString(asked).trials[0]
            call("Tell", pb.TellRequest(strategy_id=1, trial_id=trial.trial_id, outcomes=[pb.Outcome(value=1)]))
        rows, trailers = call("ExportData", pb.ExportDataRequest(strategy_id=1))
        assert trailers["grpc-status"] == "0"
        exported = [pb.ExportDataResponse.FromString(r) for r in rows]
        assert [r.trial.trial_id for r in exported] == [1, 2, 3] and {r.strategy_name for r in exported} == {"web"}
        none, trailers = call("Ask", pb.AskRequest(strategy_id=7))
        assert none == [] and trailers["grpc-status"] == "5" and unquote(trailers["grpc-message"]) == "strategy_id 7 not found"
        status = status_pb2.Status.FromString(base64.b64decode(trailers["grpc-status-details-bin"] + "=="))
        bad = error_details_pb2.BadRequest()
        assert status.details[0].Unpack(bad) and bad.field_violations[0].field == "strategy_id"
    finally:
        http.close()


def test_connect_server_stream_export(http_server: ServerThread) -> None:
    http = Http(http_port(http_server))
    try:
        http.call("Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL), pb.ConfigureResponse)
        http.call("Ask", pb.AskRequest(strategy_id=1, num_points=2), pb.AskResponse)
        body = json.dumps({"strategyId": "1"}).encode()
        response = http.raw("ExportData", grpc_web_frame(body), "application/connect+json")
        assert response.status_code == 200
        frames, i = [], 0
        while i < len(response.content):
            flag, length = response.content[i], struct.unpack(">I", response.content[i + 1 : i + 5])[0]
            frames.append((flag, json.loads(response.content[i + 5 : i + 5 + length])))
            i += 5 + length
        assert [f["trial"]["trialId"] for flag, f in frames if flag == 0] == ["1", "2"]
        assert frames[-1] == (2, {})  # end-of-stream, no error
        missing = http.raw("ExportData", grpc_web_frame(b'{"strategyId": 5}'), "application/connect+json").content
        end = json.loads(missing[5:])
        assert missing[0] == 2 and end["error"]["code"] == "not_found"
    finally:
        http.close()


# ---------------------------------------------------------------------- one journal behind every port, through a SIGKILL
def test_strategy_made_over_http_is_seen_by_grpc_and_aepsych_and_survives_sigkill(tmp_path: Path) -> None:
    db, log = str(tmp_path / "k.db"), tmp_path / "server.log"
    http_p, aep_p = free_port(), free_port()
    args = ("--no-models", "--http-port", str(http_p), "--aepsych-port", str(aep_p))
    proc = spawn_server(db, log, *args)
    http = Http(http_p)
    try:
        sid = http.call(
            "Configure", pb.ConfigureRequest(config_ini=SOBOL_MANUAL, name="made-over-http"), pb.ConfigureResponse
        ).strategy_id
        for n in range(4):
            trial = http.call("Ask", pb.AskRequest(strategy_id=sid), pb.AskResponse).trials[0]
            http.call(
                "Tell",
                pb.TellRequest(strategy_id=sid, trial_id=trial.trial_id, outcomes=[pb.Outcome(value=n % 2)]),
                pb.TellResponse,
            )
        pending = http.call("Ask", pb.AskRequest(strategy_id=sid), pb.AskResponse).trials[0]
        with pc.Client(proc.address, timeout=10) as client:
            assert client.resume(config_name="made-over-http").trials_completed == 4
        raw = Raw(aep_p)
        assert raw.call({"type": "resume", "message": {"name": "made-over-http"}}) == {"strat_id": sid}
        raw.close()
        assert proc.kill() == -9
        proc = spawn_server(db, log, *args, port=proc.port)
        summary = http.call("Resume", pb.ResumeRequest(name="made-over-http"), pb.ResumeResponse).summary
        assert (summary.strategy_id, summary.trials_completed, summary.trials_pending) == (sid, 4, 1)
        told = http.call(
            "Tell", pb.TellRequest(strategy_id=sid, trial_id=pending.trial_id, outcomes=[pb.Outcome(value=1)]), pb.TellResponse
        )
        assert told.trials_completed == 5
    finally:
        http.close()
        proc.kill()


# ---------------------------------------------------------------------- Query with a model, TLS
@pytest.mark.slow
def test_query_over_http_with_a_model(tmp_path: Path) -> None:
    srv = ServerThread(ServerOptions(port=0, db=str(tmp_path / "q.db"), workers=1, http_port=0))
    try:
        for codec in ("json", "proto"):
            http = Http(http_port(srv), codec)
            sid = http.call(
                "Configure", pb.ConfigureRequest(config_ini=(CONFIGS / "threshold_2d.ini").read_text()), pb.ConfigureResponse
            ).strategy_id
            for n in range(11):
                trial = http.call("Ask", pb.AskRequest(strategy_id=sid), pb.AskResponse).trials[0]
                c = trial.stimuli[0].values["c"].number
                http.call(
                    "Tell",
                    pb.TellRequest(strategy_id=sid, trial_id=trial.trial_id, outcomes=[pb.Outcome(value=float(c > 0 or n < 2))]),
                    pb.TellResponse,
                )
            result = http.call(
                "Query", pb.QueryRequest(strategy_id=sid, query_type=pb.QUERY_TYPE_MAX, probability_space=True), pb.QueryResponse
            )
            assert result.query_type == pb.QUERY_TYPE_MAX and len(result.predictions) == 1
            assert 0 <= result.predictions[0].probability <= 1 and set(result.predictions[0].x.values) == {"c", "a"}
            http.close()
    finally:
        srv.stop()


def test_tls_on_the_http_port(tmp_path: Path) -> None:
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    srv = ServerThread(
        ServerOptions(port=0, db=str(tmp_path / "t.db"), models=False, http_port=0, tls_cert=str(cert), tls_key=str(key))
    )
    try:
        port = http_port(srv)
        with httpx.Client(verify=str(cert), timeout=10) as client:
            reply = client.post(f"https://127.0.0.1:{port}{SERVICE}/ListStrategies", json={})
            assert reply.status_code == 200 and reply.json() == {}
        with pytest.raises(httpx.HTTPError):  # plaintext to a TLS port gets no answer
            httpx.post(f"http://127.0.0.1:{port}{SERVICE}/ListStrategies", json={}, timeout=5)
    finally:
        srv.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))


# ---------------------------------------------------------------------- a stalled body; routes mounted beside the API
def test_stalled_body_is_dropped_and_mounted_routes_share_the_port(http_server: ServerThread) -> None:
    import socket
    import time

    from psyserve.transports.http_api import start_http_server

    extra = http_server.call(start_http_server(http_server.running.service, "127.0.0.1", 0, body_timeout=0.5))

    async def metrics(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": f"path {scope['path']}".encode()})

    extra.router.mount("/metrics", metrics)
    try:
        with socket.create_connection(("127.0.0.1", extra.port), timeout=10) as sock:
            sock.sendall(
                f"POST {SERVICE}/Ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n".encode()
                + b'{"strategyId"'
            )
            t0 = time.monotonic()
            answer = b""
            while not answer.endswith(b"0\r\n\r\n") and (chunk := sock.recv(65536)):
                answer += chunk
            assert time.monotonic() - t0 < 5
        assert answer.startswith(b"HTTP/1.1 504") and b'"deadline_exceeded"' in answer and b"request body stalled" in answer
        assert httpx.get(f"http://127.0.0.1:{extra.port}/metrics", timeout=10).text == "path /metrics"
        assert httpx.get(f"http://127.0.0.1:{extra.port}/metricsx", timeout=10).status_code == 404
        reply = httpx.post(f"http://127.0.0.1:{extra.port}{SERVICE}/ListStrategies", json={}, timeout=10)
        assert reply.status_code == 200 and reply.json() == {}
    finally:
        http_server.call(extra.close())
