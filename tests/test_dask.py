"""Model computations on a real Dask cluster (`dask scheduler` + `dask worker` processes on loopback).

Proves: the same points as the local pool for the same seed and responses (speculation on); a worker
SIGKILLed mid-fit does not lose the ask; with the scheduler gone model asks answer UNAVAILABLE while
Sobol asks and tells go on, and model asks work again once a scheduler is back, with no server restart.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import psyserve_client as pc
from conftest import ServerThread, free_port
from psyserve.app import ServerOptions

pytestmark = pytest.mark.slow
DASK = str(Path(sys.executable).parent / "dask")

CONFIG = """
[common]
parnames = [x, y]
strategy_names = [init, opt]
seed = 7
[x]
lower_bound = 0
upper_bound = 1
[y]
lower_bound = 0
upper_bound = 1
[init]
generator = SobolGenerator
min_asks = 4
[opt]
generator = OptimizeAcqfGenerator
model = GPClassificationModel
acqf = MCLevelSetEstimation
min_asks = {model_asks}
[OptimizeAcqfGenerator]
restarts = {restarts}
samps = {samps}
[MCLevelSetEstimation]
target = 0.75
"""
SOBOL = CONFIG.replace("strategy_names = [init, opt]", "strategy_names = [init]").replace("min_asks = 4", "min_asks = 1000")


class Cluster:
    """A Dask scheduler and workers as subprocesses on 127.0.0.1, logging into tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return f"dask://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # the process keeps it open
        return subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def start_scheduler(self) -> None:
        self.scheduler = self._spawn("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard")

    def start_worker(self) -> None:
        n = len(self.workers)
        self.workers.append(
            self._spawn(
                f"worker{n}",
                "worker",
                f"tcp://127.0.0.1:{self.port}",
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-nanny",
                "--no-dashboard",
                "--death-timeout",
                "60",
                "--preload",
                "psyserve.dask_worker",
            )
        )

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start_scheduler()
    c.start_worker()
    c.start_worker()
    try:
        yield c
    finally:
        c.stop()


def run_experiment(address: str, trials: int, pause: float) -> tuple[list[dict[str, object]], int]:
    """A deterministic observer (yes when x + y > 1); returns every asked point and how many were precomputed."""
    points, precomputed = [], 0
    with pc.Client(address, timeout=120) as client:
        sid = client.configure(config_str=CONFIG.format(model_asks=trials - 4, restarts=2, samps=64)).strategy_id
        for _ in range(trials):
            ask = client.ask(strategy_id=sid)
            trial = ask.trials[0]
            points.append(trial.params)
            precomputed += ask.precomputed
            time.sleep(pause)
            client.tell(
                trial_id=trial.trial_id, strategy_id=sid, outcome=int(float(trial.params["x"]) + float(trial.params["y"]) > 1)
            )  # type: ignore[arg-type]
    return points, precomputed


def test_dask_cluster_gives_the_local_pools_points(cluster: Cluster, tmp_path: Path) -> None:
    dask_server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "d.db"), compute=cluster.url))
    try:
        dask_server.call(dask_server.running.service.models.pool.wait_ready(2))  # type: ignore[union-attr]
        on_dask, precomputed = run_experiment(dask_server.address, 10, pause=0.5)
        submitted = dask_server.running.service.models.pool.submitted  # type: ignore[union-attr]
    finally:
        dask_server.stop()
    local_server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "l.db"), workers=1))
    try:
        on_local, _ = run_experiment(local_server.address, 10, pause=0.0)
    finally:
        local_server.stop()
    assert on_dask == on_local  # bit-identical: same jobs, same seeds, same data
    assert submitted >= 6 and precomputed >= 1  # the model asks ran on the cluster, some speculatively


def _kill_busy_worker(url: str, start_job: Callable[[], threading.Thread]) -> bool:
    """Start the job (connected and ready to watch first), then SIGKILL the worker that runs a
    psyserve generate job as soon as one does; False if none was seen while the job ran."""
    from distributed import Client

    with Client(url.replace("dask://", "tcp://"), timeout=10) as client:
        pids = client.run(os.getpid)
        job = start_job()
        deadline = time.monotonic() + 60
        while job.is_alive() and time.monotonic() < deadline:
            for address, keys in client.processing().items():
                if any("psyserve-generate" in str(k) for k in keys):
                    os.kill(pids[address], signal.SIGKILL)
                    return True
            time.sleep(0.005)
    return False


def test_worker_killed_mid_fit_and_scheduler_lost_and_back(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PSYSERVE_SPECULATE", "0")  # each ask computes on demand: the kill hits a real ask
    server = ServerThread(ServerOptions(host="127.0.0.1", port=0, db=str(tmp_path / "k.db"), compute=cluster.url))
    try:
        server.call(server.running.service.models.pool.wait_ready(2))  # type: ignore[union-attr]
        with pc.Client(server.address, timeout=120) as client:
            heavy = CONFIG.format(model_asks=100, restarts=60, samps=8000).replace("min_asks = 4\n", "min_asks = 12\n")
            sid = client.configure(config_str=heavy).strategy_id
            for i in range(12):
                trial = client.ask(strategy_id=sid).trials[0]
                client.tell(trial_id=trial.trial_id, strategy_id=sid, outcome=i % 2)

            # a worker SIGKILLed while it runs the ask's job: Dask reruns it on the other worker
            with pc.Client(server.address, timeout=120) as asker:
                answer: dict[str, object] = {}
                thread = threading.Thread(target=lambda: answer.setdefault("ask", asker.ask(strategy_id=sid)))

                def start() -> threading.Thread:
                    thread.start()
                    return thread

                killed = _kill_busy_worker(cluster.url, start)
                thread.join(120)
            assert killed, "the job never showed up on a worker"
            assert "ask" in answer and len(answer["ask"].trials) == 1  # type: ignore[attr-defined]
            client.tell(trial_id=answer["ask"].trials[0].trial_id, strategy_id=sid, outcome=1)  # type: ignore[attr-defined]

            # the scheduler gone: model asks UNAVAILABLE, Sobol strategies keep working
            assert cluster.scheduler is not None
            cluster.scheduler.kill()
            cluster.scheduler.wait(10)
            sobol = client.configure(config_str=SOBOL).strategy_id
            t0 = time.monotonic()
            with pytest.raises(pc.UnavailableError) as err:
                client.ask(strategy_id=sid)
            assert "Dask" in str(err.value) and time.monotonic() - t0 < 30
            for _ in range(3):
                trial = client.ask(strategy_id=sobol).trials[0]
                client.tell(trial_id=trial.trial_id, strategy_id=sobol, outcome=1)

            # a scheduler back on the same address (with fresh workers): model asks work again
            cluster.start_scheduler()
            cluster.start_worker()
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(pc.UnavailableError):
                    ask = client.ask(strategy_id=sid)
                    break
                assert time.monotonic() < deadline, "model asks did not come back"
                time.sleep(1)
            assert len(ask.trials) == 1
    finally:
        server.stop()
