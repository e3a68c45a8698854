"""The .proto files compile cleanly for C++ and C#, and the committed Python code is fresh."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTOS = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))


def test_cpp_and_csharp_generation_is_clean(tmp_path: Path) -> None:
    """C++ messages + gRPC stubs and C# messages, with the system protoc and grpc_cpp_plugin (Debian)."""
    protoc_bin, plugin = shutil.which("protoc"), shutil.which("grpc_cpp_plugin")
    if not (protoc_bin and plugin):
        if os.environ.get("CI"):
            pytest.fail("CI must install protobuf-compiler and protobuf-compiler-grpc")
        pytest.skip("apt-get install protobuf-compiler protobuf-compiler-grpc")
    cmd = [
        protoc_bin,
        f"-I{ROOT / 'protos'}",
        f"--cpp_out={tmp_path}",
        f"--grpc_out={tmp_path}",
        f"--csharp_out={tmp_path}",
        f"--plugin=protoc-gen-grpc={plugin}",
        *PROTOS,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", f"protoc warnings: {result.stderr}"
    generated = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"messages.pb.h", "messages.pb.cc", "service.pb.h", "service.grpc.pb.h", "service.grpc.pb.cc"} <= generated
    assert {"Messages.cs", "Service.cs"} <= generated
    assert "namespace Psyserve.V1" in (tmp_path / "Messages.cs").read_text()


def test_generated_python_is_fresh(tmp_path: Path) -> None:
    out = tmp_path / "gen"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--out", str(out)], check=True, capture_output=True, timeout=60
    )
    committed = ROOT / "clients" / "python" / "psyserve_client" / "_proto"
    stale = []
    for path in out.rglob("*.py*"):
        other = committed / path.relative_to(out)
        if not other.exists() or not filecmp.cmp(path, other, shallow=False):
            stale.append(str(path.relative_to(out)))
    assert not stale, f"generated code is stale, run 'make protos': {stale}"
