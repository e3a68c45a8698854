"""The C# client (clients/unity/com.psyserve.client/Runtime, built by clients/csharp) compiled with Debian's
mcs and run with mono: its generated message classes against google.protobuf's JSON mapping, its
Connect error decoding, a full experiment against a real psyserve's HTTP endpoint, and the Unity
transport + sample compiled against a stand-in of the UnityEngine types they use (compile only).
"""

from __future__ import annotations

import base64
import filecmp
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor, json_format, message
from google.rpc import error_details_pb2

from conftest import CONFIGS, ROOT, ServerProcess, free_port, spawn_server
from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb

PACKAGE = ROOT / "clients" / "unity" / "com.psyserve.client"
RUNTIME = PACKAGE / "Runtime"
TESTS_CS = ROOT / "tests" / "csharp"
FD = descriptor.FieldDescriptor


def _tools() -> tuple[str, str]:
    mcs, mono = shutil.which("mcs"), shutil.which("mono")
    if not (mcs and mono):
        if os.environ.get("CI"):
            pytest.fail("CI must install mono-mcs and mono-devel")
        pytest.skip("apt-get install mono-mcs mono-devel")
    return mcs, mono


def _mcs(*args: str) -> None:
    mcs, _ = _tools()
    result = subprocess.run([mcs, "-langversion:7.2", "-warnaserror+", *args], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The library via clients/csharp's build script (the way users build it), plus the test programs."""
    _tools()
    out = tmp_path_factory.mktemp("csharp")
    result = subprocess.run(
        ["bash", str(ROOT / "clients" / "csharp" / "build.sh"), str(out)], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stdout + result.stderr
    dll = out / "Psyserve.Client.dll"
    for name in ("RoundTrip", "ClientTest"):
        _mcs(f"-r:{dll}", "-r:System.Net.Http.dll", f"-out:{out / name}.exe", str(TESTS_CS / f"{name}.cs"))
    return out


def _mono(build: Path, exe: str, *args: str, stdin: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    _, mono = _tools()
    env = {**os.environ, "MONO_PATH": str(build)}
    return subprocess.run(
        [mono, "--debug", str(build / exe), *args], input=stdin, capture_output=True, text=True, timeout=timeout, env=env, encoding="utf-8"
    )


# ---------------------------------------------------------------------------- generated code


def test_generated_messages_are_fresh(tmp_path: Path) -> None:
    """Messages.g.cs is what scripts/gen_csharp.py makes from protos/ now (`make protos` after a proto change)."""
    fresh = tmp_path / "Messages.g.cs"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_csharp.py"), "--out", str(fresh)], check=True, timeout=120)
    assert filecmp.cmp(fresh, RUNTIME / "Messages.g.cs", shallow=False), "Messages.g.cs is stale: run 'make protos' and commit"


def _fill(msg: message.Message, rng: random.Random, depth: int = 0) -> None:
    """Every field of msg set to a random non-default value (one member per oneof), recursively."""
    d = msg.DESCRIPTOR
    chosen = {o.name: rng.choice(o.fields) for o in d.oneofs if not o.name.startswith("_")}

    def scalar(f: descriptor.FieldDescriptor) -> Any:
        t = f.type
        if t == FD.TYPE_DOUBLE:
            return rng.choice([rng.uniform(-1e6, 1e6), rng.random() * 1e-300, 1.0 / 3.0, -2.5, 1e300, 0.1])
        if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            return rng.choice([2**62 + rng.randrange(1000), -(2**63), 2**63 - 1, rng.randrange(1, 10**6)])
        if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            return rng.choice([-(2**31), 2**31 - 1, rng.randrange(1, 1000)])
        if t == FD.TYPE_BOOL:
            return True
        if t == FD.TYPE_STRING:
            return rng.choice(["c", "näive \"quoted\" \\ back", "tab\there\nnewline", "日本語 ✓ \U0001f600", "\x01ctl"])
        if t == FD.TYPE_ENUM:
            return rng.choice([v.number for v in f.enum_type.values if v.number != 0])
        raise AssertionError(f"no filler for {f.full_name}")

    for f in d.fields:
        oneof = f.containing_oneof
        if oneof is not None and not oneof.name.startswith("_") and chosen[oneof.name] is not f:
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value_field = f.message_type.fields_by_name["value"]
            field_map = getattr(msg, f.name)
            for key in ("a", "b c", "ü"):
                if value_field.message_type is not None:
                    if depth < 3:
                        _fill(field_map[key], rng, depth + 1)
                else:
                    field_map[key] = scalar(value_field)
        elif f.is_repeated:
            if f.message_type is not None:
                if depth < 3:
                    for _ in range(2):
                        _fill(getattr(msg, f.name).add(), rng, depth + 1)
            else:
                getattr(msg, f.name).extend(scalar(f) for _ in range(2))
        elif f.message_type is not None:
            if depth < 3:
                _fill(getattr(msg, f.name), rng, depth + 1)
            else:
                getattr(msg, f.name).SetInParent()
        else:
            setattr(msg, f.name, scalar(f))


def _messages(seed: int) -> Iterator[message.Message]:
    rng = random.Random(seed)
    for name in pb.DESCRIPTOR.message_types_by_name:
        cls = getattr(pb, name)
        for _ in range(3):
            m = cls()
            _fill(m, rng)
            yield m
        yield cls()  # all defaults


def test_json_round_trip_matches_protobuf(build: Path) -> None:
    """Every message, fully populated (int64 extremes, unicode, oneofs, optionals, maps, enums), as
    google.protobuf writes it (camelCase and proto field names, enums as names and as numbers):
    the C# classes read it and write JSON that google.protobuf parses back to the same message."""
    originals: list[message.Message] = []
    lines: list[str] = []
    for i, m in enumerate(_messages(seed=9)):
        variant = i % 3
        text = json_format.MessageToJson(
            m, indent=None, preserving_proto_field_name=variant == 1, use_integers_for_enums=variant == 2
        )
        originals.append(m)
        lines.append(f"{m.DESCRIPTOR.full_name}\t{text}")
    # doubles from random bit patterns (subnormals included): shortest repr text must come back bit-exact
    rng = random.Random(1)
    for _ in range(600):
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if math.isfinite(x):
            originals.append(pb.Outcome(value=x))
            lines.append(f"psyserve.v1.Outcome\t{json_format.MessageToJson(originals[-1], indent=None)}")
    # NaN / infinities as strings, integers as JSON numbers (both allowed by proto3 JSON)
    special = pb.AskRequest(strategy_id=7, ttl_seconds=float("inf"), num_points=3)
    originals.append(special)
    lines.append('psyserve.v1.AskRequest\t{"strategyId": 7, "ttlSeconds": "Infinity", "numPoints": "3", "unknownField": [1, {"x": null}]}')
    result = _mono(build, "RoundTrip.exe", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.splitlines()
    assert len(outputs) == len(originals)
    for original, out in zip(originals, outputs):
        assert not out.startswith("ERROR"), (original.DESCRIPTOR.name, out)
        back = type(original)()
        json_format.Parse(out, back)
        assert back == original, (original.DESCRIPTOR.name, out)
    # int64 values travel as strings (proto3 JSON), int32 as numbers
    first = json.loads(outputs[-1])
    assert first["strategyId"] == "7" and first["numPoints"] == 3 and first["ttlSeconds"] == "Infinity"


def test_bad_json_is_a_clear_error(build: Path) -> None:
    cases = [
        ('psyserve.v1.AskRequest\t{"strategyId": "12x"}', "strategyId"),
        ('psyserve.v1.AskRequest\t{"numPoints": 3000000000}', "numPoints"),
        ('psyserve.v1.Trial\t{"stimuli": {"values": {}}}', "stimuli"),
        ('psyserve.v1.Outcome\t{"value": true}', "value"),
        ('psyserve.v1.Outcome\t{"value": 1,}', "offset"),
        ('psyserve.v1.Outcome\t{"name": "unterminated}', "unterminated"),
        ('psyserve.v1.Outcome\t' + "[" * 200 + "]" * 200, "deeply"),
        ('psyserve.v1.ParameterValue\t{"number": 1, "integer": 2}', None),  # parses; writing it is refused
    ]
    result = _mono(build, "RoundTrip.exe", stdin="\n".join(c for c, _ in cases) + "\n")
    assert result.returncode == 0, result.stderr
    outputs = result.stdout.splitlines()
    for (case, needle), out in zip(cases, outputs):
        assert out.startswith("ERROR"), (case, out)
        assert needle is None or needle in out, (case, out)
    assert "set only one of number, integer" in outputs[-1]


def test_connect_error_bodies(build: Path) -> None:
    """Connect error JSON -> exception class and field: from the BadRequest's debug JSON, else from its
    base64 protobuf value (unpadded, as Connect writes it), else the HTTP status's code."""
    bad = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="[opt_strat] acqf", description="unknown acquisition ü"),
            error_details_pb2.BadRequest.FieldViolation(field="num_points", description="too many"),
        ]
    )
    raw = bad.SerializeToString()
    value = base64.b64encode(raw).decode().rstrip("=")
    with_debug = {
        "code": "invalid_argument",
        "message": "bad config",
        "details": [{"type": "google.rpc.BadRequest", "value": value, "debug": json_format.MessageToDict(bad)}],
    }
    without_debug = {"code": "not_found", "message": "no strategy 9", "details": [{"type": "google.rpc.BadRequest", "value": value}]}
    lines = [
        f"!badrequest\t{value}",
        f"!error\t{json.dumps(with_debug)}",
        f"!error\t{json.dumps(without_debug)}",
        '!error\t{"code": "unauthenticated", "message": "missing token"}',
        "!error\t<html>proxy error</html>",
        '!error\t{"code": "some_future_code", "message": "?"}',
    ]
    result = _mono(build, "RoundTrip.exe", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert out[0] == [["[opt_strat] acqf", "unknown acquisition ü"], ["num_points", "too many"]]
    assert out[1] == ["InvalidArgumentException", "invalid_argument", "[opt_strat] acqf", "bad config"]
    assert out[2] == ["NotFoundException", "not_found", "[opt_strat] acqf", "no strategy 9"]
    assert out[3] == ["UnauthenticatedException", "unauthenticated", None, "missing token"]
    assert out[4][:3] == ["InternalException", "internal", None] and "proxy error" in out[4][3]  # HTTP 400 without a body
    assert out[5][:2] == ["PsyserveException", "some_future_code"]


# ---------------------------------------------------------------------------- Unity package


def test_unity_package_layout() -> None:
    """UPM layout: package.json names the sample; every file and folder (outside Samples~ itself) has a
    committed .meta with a unique, well-formed GUID; the asmdef names the assembly link.xml keeps."""
    manifest = json.loads((PACKAGE / "package.json").read_text())
    assert manifest["name"] == "com.psyserve.client" and manifest["unity"]
    assert [s["path"] for s in manifest["samples"]] == ["Samples~/MinimalExperiment"]
    assert (PACKAGE / "Samples~" / "MinimalExperiment" / "PsyserveExperiment.cs").is_file()
    asmdef = json.loads((RUNTIME / "Psyserve.Client.asmdef").read_text())
    assert asmdef["name"] == "Psyserve.Client"
    assert 'assembly fullname="Psyserve.Client"' in (RUNTIME / "link.xml").read_text()
    guids: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*")):
        if path.suffix == ".meta" or path.name == "Samples~":
            continue
        meta = path.with_name(path.name + ".meta")
        assert meta.is_file(), f"{path.relative_to(PACKAGE)} has no .meta (Unity would make one with a random GUID)"
        lines = meta.read_text().splitlines()
        guid = next(line.split(": ")[1] for line in lines if line.startswith("guid: "))
        assert len(guid) == 32 and all(c in "0123456789abcdef" for c in guid), meta
        assert guid not in guids, f"{meta} repeats the GUID of {guids[guid]}"
        guids[guid] = meta
        assert ("folderAsset: yes" in lines) == path.is_dir(), meta
    for meta in PACKAGE.rglob("*.meta"):
        assert meta.with_name(meta.name[: -len(".meta")]).exists(), f"{meta} has no file"
    # the core sources exist once: clients/csharp builds from the package's Runtime/
    assert not list((ROOT / "clients" / "csharp").rglob("*.cs"))


def test_unity_transport_and_sample_compile(build: Path) -> None:
    """The UnityWebRequest transport and the sample compile against a stand-in of the UnityEngine types
    they use (tests/csharp/UnityStandIn.cs), for Unity before and after 2020.2's request.result.
    This proves they compile against those signatures, nothing more: nothing here runs Unity."""
    engine = build / "UnityEngine.dll"
    _mcs("-target:library", f"-out:{engine}", str(TESTS_CS / "UnityStandIn.cs"))
    sources = [str(p) for p in sorted(RUNTIME.glob("*.cs"))]
    sample = PACKAGE / "Samples~" / "MinimalExperiment" / "PsyserveExperiment.cs"
    for defines in (["-define:UNITY_5_3_OR_NEWER"], ["-define:UNITY_5_3_OR_NEWER", "-define:UNITY_2020_2_OR_NEWER"]):
        lib = build / "Psyserve.Client.Unity.dll"
        _mcs("-target:library", *defines, f"-r:{engine}", "-r:System.Net.Http.dll", "-r:System.Numerics.dll", f"-out:{lib}", *sources)
        _mcs("-target:library", f"-r:{engine}", f"-r:{lib}", f"-out:{build / 'Sample.dll'}", str(sample))


# ---------------------------------------------------------------------------- against a real server


def _http_ready(port: int, timeout: float = 30.0) -> None:
    import socket
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"HTTP port {port} did not open")


def _serve(db: str, log: Path, http_port: int, *extra: str) -> ServerProcess:
    proc = spawn_server(db, log, "--http-port", str(http_port), *extra)
    _http_ready(http_port)
    return proc


def _run_json(build: Path, *args: str) -> dict[str, Any]:
    result = _mono(build, "ClientTest.exe", *args, timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.slow
def test_full_experiment_from_mono(build: Path, tmp_path: Path) -> None:
    """mono runs the C# client against psyserve's HTTP endpoint with a token: token refused when
    missing/wrong; INI configure; ask/tell through Sobol into the GP model phase; errors as their
    exception class with the field; tell by stimulus; abandon; then, after the server is SIGKILLed and
    restarted on the same journal, resume by id, more model trials, query max/inverse/prediction."""
    db, log, token = str(tmp_path / "journal.db"), tmp_path / "server.log", "s3cret-token"
    http_port = free_port()
    url = f"http://127.0.0.1:{http_port}"
    server = _serve(db, log, http_port, "--auth-token", token, "--workers", "1")
    try:
        out = _run_json(build, "experiment", url, token, str(CONFIGS / "threshold_2d.ini"))
    finally:
        server.kill()
    for key in ("no_token", "wrong_token"):
        assert out[key]["type"] == "UnauthenticatedException" and out[key]["code"] == "unauthenticated"
    assert out["parameters"] == ["c:Continuous:-1:1", "a:Continuous:-1:1"]
    phases = [t["phase"] for t in out["trials"]]
    assert phases == ["init_strat"] * 10 + ["opt_strat"] * 3, phases
    assert [int(t["id"]) for t in out["trials"]] == list(range(1, 14))
    points = [(float(t["c"]), float(t["a"])) for t in out["trials"]]
    # the Sobol trials are all different; a model trial may repeat one (MCLSE asked the corner (1, 1)
    # twice in a row on seed 1's Sobol start), but stays in the box
    assert len(set(points[:10])) == 10, points
    assert all(-1 <= v <= 1 for p in points for v in p), points
    errors = {
        "bad_outcome": ("InvalidArgumentException", "outcomes[0].value", "binary"),
        "bad_config": ("InvalidArgumentException", "config_ini[s].min_asks", "integer"),
        "unknown_strategy": ("NotFoundException", "strategy_id", "12345"),
        "unknown_name": ("NotFoundException", "name", "nobody"),
        "bad_stimulus": ("InvalidArgumentException", "stimuli[0].a", "bounds"),
    }
    for key, (cls, field, words) in errors.items():
        assert (out[key]["type"], out[key]["field"]) == (cls, field), (key, out[key])
        assert words in out[key]["message"], (key, out[key])
    # 13 asked + 1 abandoned (bad outcome) + 1 told by stimulus + 1 failed
    assert out["completed"] == 14 and out["all"] == 16
    assert out["rt_metadata"] == "0.42" and int(out["info_data_points"]) == 14
    assert out["info_model"] == "GPClassificationModel" and out["config_model"] == "GPClassificationModel"
    assert (out["summary_name"], out["participant"], out["strategies"]) == ("csharp-P01", "P01", 1)

    server = _serve(db, log, http_port, "--auth-token", token, "--workers", "1")
    try:
        again = _run_json(build, "resume", url, token, str(out["strategy_id"]))
    finally:
        server.kill()
    assert int(again["resumed_completed"]) == 14 and again["resumed_name"] == "csharp-P01" and again["resumed_phase"] == 1
    assert [int(t["id"]) for t in again["trials"]] == [17, 18, 19]  # ids continue after the restart, never reused
    assert {t["phase"] for t in again["trials"]} == {"opt_strat"}
    assert 0.0 <= again["predict_low"] < again["predict_high"] <= 1.0
    assert -1.0 <= again["inverse_a"] <= 1.0 and again["inverse_c"] == 0.0
    assert 0.5 < again["max_probability"] <= 1.0
    assert again["finished_strategy"] == "opt_strat"


def test_timeout_cancel_and_unreachable(build: Path) -> None:
    """A server that accepts and never answers -> DeadlineExceededException at the client's timeout;
    a canceled token -> CanceledException; a closed port -> UnavailableException; no strategy -> a
    clear InvalidOperationException before any call."""
    import socket

    with socket.socket() as silent, socket.socket() as closed:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        out = _run_json(
            build, "transport", f"http://127.0.0.1:{silent.getsockname()[1]}", f"http://127.0.0.1:{closed.getsockname()[1]}"
        )
    assert out["silent"]["type"] == "DeadlineExceededException" and 0.4 < out["silent_seconds"] < 5
    assert out["canceled"]["type"] == "CanceledException" and out["canceled_seconds"] < 5
    assert out["closed"]["type"] == "UnavailableException" and "cannot reach" in out["closed"]["message"]
    assert "ConfigureAsync or ResumeAsync" in out["no_strategy"]
