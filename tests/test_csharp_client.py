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

from psyserve_client._proto.psyserve.v1 import messages_pb2 as pb

from conftest import CONFIGS, ROOT, ServerProcess, free_port, spawn_server

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
