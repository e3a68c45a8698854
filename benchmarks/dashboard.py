"""What watching costs the experiment: model-phase ask latency with 16 participants, with and
without 4 dashboard pages open, in one run (each round runs every condition, in a rotating order).

Each condition starts a fresh server (subprocess on 127.0.0.1): "without" is a plain `psyserve
serve`; the others are `psyserve serve --dashboard` (so /metrics instrumentation is on too) with
4 strategy pages followed by a viewer process on this same machine:
  browser  headless chromium (Debian's, through Playwright), live-updating tables and plots;
  sse      plain HTTP readers doing what the pages' network does (the strategy's feed on the event
           stream, plot images at the page's pace) without a browser: the server's share of the cost;
  idle     --dashboard on, no page open.
The viewer runs in its own process, as a viewer does: never in the participants' event loop. The
participants are psychophysics.py's (novel detection, 10 Sobol + 40 model trials, response time
1 s), same seeds in every condition. Reported: p50/p99, the p99 ratio to "without", CPU seconds
of the server tree and the viewer (by process type), page traffic, the load average.
--diagnose also times every event-loop callback and samples what the loop's thread was doing
whenever it answered late (> 4 ms), in the server and in the participants' process (_loopprobe.py).

Usage (from benchmarks/): python dashboard.py [--rounds 2] [--viewers browser,sse] [--diagnose]
       [--participants 16] [--pages 4] [--browser-nice 19]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import _loopprobe
import numpy as np

from _harness import free_port, percentile, server_process
from psychophysics import RunResult, run_participant

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds used so far, command line) of every process we can read."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, cmdline)
        _NICE[int(entry)] = int(fields[16])
    return out


_NICE: dict[int, int] = {}


def server_split(address: str) -> dict[str, float]:
    """The server tree's CPU seconds by part: the server process, compute workers, the render process
    (the dashboard's plot drawing runs at nice 15, the workers below that)."""
    procs = _processes()
    port = address.rsplit(":", 1)[1]
    server = next(pid for pid, (_, _, cmd) in procs.items() if "psyserve serve" in cmd and f"--port {port} " in cmd)
    out = {"server process": procs[server][1], "workers": 0.0, "render process": 0.0}
    for pid in _descendants(procs, server) - {server}:  # workers run at the server's nice + 5, the render process + 15
        out["render process" if _NICE.get(pid, 0) > _NICE.get(server, 0) + 5 else "workers"] += procs[pid][1]
    return out


def _descendants(procs: dict[int, tuple[int, float, str]], root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = set(), [root]
    while todo:
        pid = todo.pop()
        out.add(pid)
        todo += children.get(pid, [])
    return out


def _tree_cpu(procs: dict[int, tuple[int, float, str]], root: int) -> float:
    """CPU seconds of a process and all its living descendants."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs.get(pid, (0, 0.0, ""))[1]
        todo += children.get(pid, [])
    return total


def _server_pid(address: str) -> int:
    port = address.rsplit(":", 1)[1]
    return next(pid for pid, (_, _, cmd) in _processes().items() if "psyserve serve" in cmd and f"--port {port} " in cmd)


def cpu_use(address: str) -> tuple[float, float]:
    """(CPU seconds of the server at `address` with its workers and render process, CPU seconds of
    everything else this benchmark started: the browser and Playwright's driver)."""
    procs = _processes()
    port = address.rsplit(":", 1)[1]
    server = next(pid for pid, (_, _, cmd) in procs.items() if "psyserve serve" in cmd and f"--port {port} " in cmd)
    mine = _tree_cpu(procs, os.getpid()) - procs[os.getpid()][1]
    server_cpu = _tree_cpu(procs, server)
    return server_cpu, mine - server_cpu


async def participants(address: str, count: int, response_time: float) -> list[RunResult]:
    return list(
        await asyncio.gather(*(run_participant(address, "novel_detection", 1000 + i, response_time, False) for i in range(count)))
    )


# ---------------------------------------------------------------------- viewers (a separate process)
# The viewer runs in its own process, as a viewer does (another program, usually another machine):
# never in the participants' event loop, whose ask timings it would otherwise disturb.
async def _wait_for_strategies(dashboard: str, pages: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            status, body = await _http_get(dashboard, "/api/strategies")
            if status == 200 and len(json.loads(body)["strategies"]) >= pages:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("the participants' strategies did not appear")


async def _open_pages(browser: Any, dashboard: str, pages: int) -> list[tuple[Any, Any]]:
    """Open strategy pages 1..`pages` in `browser`, each with a CDP session whose Performance
    metrics are on and a resource-timing buffer large enough for a whole round's requests."""
    opened = []
    for sid in range(1, pages + 1):
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        await page.add_init_script("performance.setResourceTimingBufferSize(100000)")
        cdp = await page.context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        await page.goto(f"{dashboard}/s/{sid}")
        opened.append((page, cdp))
    return opened


async def _http_get(base: str, path: str, conn: list[Any] | None = None) -> tuple[int, bytes]:
    """GET on a keep-alive HTTP/1.1 connection (`conn` holds [reader, writer] between calls); a
    kept connection the server has since closed (uvicorn closes idle ones after 5 s) is replaced,
    as a browser does."""
    if conn:
        try:
            return await _http_get_once(base, path, conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            conn[1].close()
            conn.clear()
    return await _http_get_once(base, path, conn)


async def _http_get_once(base: str, path: str, conn: list[Any] | None) -> tuple[int, bytes]:
    host, port = base.split("//", 1)[1].split(":")
    if conn is None or not conn:
        reader, writer = await asyncio.open_connection(host, int(port))
        if conn is not None:
            conn[:] = [reader, writer]
    else:
        reader, writer = conn
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: */*\r\n\r\n".encode())
    await writer.drain()
    status, headers = await _read_head(reader)
    if headers.get("transfer-encoding") == "chunked":
        body = b"".join([chunk async for chunk in _chunks(reader)])
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    if conn is None:
        writer.close()
    return status, body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    return int(head[0].split()[1]), headers


async def _chunks(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        chunk = await reader.readexactly(size)
        await reader.readexactly(2)
        yield chunk


async def sse_page(dashboard: str, sid: int, loads: Counter[str], stop: asyncio.Event) -> None:
    """What a strategy page's network does (dashboard.js), without a browser: follow the strategy's
    feed on /api/events?strategy=N&since=0 (the trials that changed, pushed); load the server-drawn
    model plot when its version changed, at most every 10 s, beside the stream."""
    state: dict[str, Any] = {"plot_version": None, "plot_at": 0.0}
    loading: list[asyncio.Future[None]] = []
    plot_conn: list[Any] = []

    async def load_plots(kinds: list[str], version: str) -> None:  # the page's <img> loads
        for kind in kinds:
            await _http_get(dashboard, f"/s/{sid}/plot/{kind}.png?v={version}", plot_conn)
            loads[f"plot images (page {sid})"] += 1

    def plots_loaded(future: asyncio.Future[None]) -> None:
        loading.clear()
        if not future.cancelled() and future.exception() is not None:
            loads[f"plot load failed (page {sid}): {type(future.exception()).__name__}"] += 1

    async def events() -> None:
        host, port = dashboard.split("//", 1)[1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /api/events?strategy={sid}&since=0 HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        await _read_head(reader)
        buffer = b""
        try:
            async for chunk in _chunks(reader):
                buffer += chunk
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if not event.startswith(b"data: "):
                        continue
                    data = json.loads(event[6:])
                    loads[f"feed messages (page {sid})"] += 1
                    version, now = data["strategy"]["version"], time.monotonic()
                    if data["plots"] and version != state["plot_version"] and now - state["plot_at"] >= 10.0 and not loading:
                        state["plot_version"], state["plot_at"] = version, now
                        loading.append(asyncio.ensure_future(load_plots(list(data["plots"]), version)))
                        loading[-1].add_done_callback(plots_loaded)
        finally:
            writer.close()

    tasks: list[asyncio.Future[None]] = [asyncio.ensure_future(events())]
    await stop.wait()
    tasks += loading
    for task in tasks:
        if task.done() and task.exception() is not None:
            loads[f"reader failed (page {sid}): {task.exception()!r}"] += 1
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def view(kind: str, dashboard: str, pages: int, browser_nice: int) -> None:
    """The viewer process: says "ready", opens `pages` strategy pages once the strategies exist,
    follows them until a line arrives on stdin, then prints one JSON line (page traffic, CPU)."""
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    loads: Counter[str] = Counter()
    cpu: dict[str, float] = {}
    if kind == "sse":
        print("ready", flush=True)
        await _wait_for_strategies(dashboard, pages)
        stop = asyncio.Event()
        readers = [asyncio.ensure_future(sse_page(dashboard, sid, loads, stop)) for sid in range(1, pages + 1)]
        await stdin.readline()
        procs = _processes()
        cpu["sse readers"] = _tree_cpu(procs, os.getpid())
        stop.set()
        await asyncio.gather(*readers, return_exceptions=True)
    else:
        from playwright.async_api import async_playwright

        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                print("ready", flush=True)
                await _wait_for_strategies(dashboard, pages)
                opened = await _open_pages(browser, dashboard, pages)
                if browser_nice:  # the browser stands in for a viewer on another machine: give it only idle CPU
                    for pid in _descendants(_processes(), os.getpid()) - {os.getpid()}:
                        # every thread: on Linux a nice value is per thread, and chromium raises some of its own
                        tids = os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else [str(pid)]
                        for tid in tids:
                            with contextlib.suppress(OSError):
                                os.setpriority(os.PRIO_PROCESS, int(tid), browser_nice)
                await stdin.readline()
                for sid, (page, cdp) in enumerate(opened, 1):  # what the pages loaded, from their own resource timing
                    urls = await page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
                    loads[f"plot images (page {sid})"] = sum("/plot/" in u for u in urls)
                    loads[f"feed requests (page {sid})"] = sum(f"/api/strategies/{sid}" in u for u in urls)
                    metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
                    for name in (
                        "TaskDuration",
                        "ScriptDuration",
                        "LayoutDuration",
                        "RecalcStyleDuration",
                        "Nodes",
                        "LayoutCount",
                        "RecalcStyleCount",
                    ):
                        loads[f"renderer main thread: {name} (all pages)"] += round(metrics.get(name, 0.0), 2)
                procs = _processes()
                for pid in _descendants(procs, os.getpid()):
                    cmd = procs[pid][2]
                    what = (
                        "python"
                        if pid == os.getpid()
                        else cmd.split("--type=", 1)[1].split()[0]
                        if "--type=" in cmd
                        else ("chromium" if "chromium" in cmd else "driver")
                    )
                    cpu[what] = cpu.get(what, 0.0) + procs[pid][1]
            finally:
                await browser.close()
    print(json.dumps({"loads": dict(loads), "cpu": dict(cpu)}), flush=True)


async def watched(
    address: str, dashboard: str, count: int, pages: int, response_time: float, kind: str, browser_nice: int
) -> tuple[list[RunResult], Counter[str], dict[str, float]]:
    viewer = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--view",
        kind,
        "--dashboard",
        dashboard,
        "--pages",
        str(pages),
        "--browser-nice",
        str(browser_nice),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert viewer.stdin is not None and viewer.stdout is not None
    try:
        line = await asyncio.wait_for(viewer.stdout.readline(), 120)
        if line.strip() != b"ready":
            raise RuntimeError(f"the viewer did not start: {line!r}")
        results = await participants(address, count, response_time)
        viewer.stdin.write(b"stop\n")
        await viewer.stdin.drain()
        report = json.loads(await asyncio.wait_for(viewer.stdout.readline(), 60))
        await asyncio.wait_for(viewer.wait(), 60)
    finally:
        if viewer.returncode is None:
            viewer.kill()
            await viewer.wait()
    return results, Counter(report["loads"]), report["cpu"]


async def run_condition(
    args: argparse.Namespace, condition: str, address: str, dashboard: str
) -> tuple[list[RunResult], Counter[str], dict[str, float], dict[str, Any]]:
    """One condition's participants (with its viewer); the participants' loop probe report if --diagnose."""
    probe = _loopprobe.install() if args.diagnose else None
    cpu: dict[str, float] = {}
    try:
        if condition in ("without", "idle"):
            runs, loads = await participants(address, args.participants, args.response_time), Counter[str]()
        else:
            runs, loads, cpu = await watched(
                address, dashboard, args.participants, args.pages, args.response_time, condition, args.browser_nice
            )
    finally:
        report = probe.report() if probe is not None else {}
    return runs, loads, cpu, report


def summary(label: str, runs: list[RunResult]) -> tuple[float, float, str]:
    asks = [s for r in runs for s in r.model_ask_s]
    pre = [p for r in runs for p in r.precomputed]
    p50, p99 = percentile(asks, 50), percentile(asks, 99)
    # the asks a speculative branch had answered: their time is the serving path alone (event loop,
    # network, scheduling), not the compute pool's backlog, which a loaded machine inflates
    served = [s for r in runs for s, p in zip(r.model_ask_s, r.precomputed, strict=True) if p]
    text = (
        f"{label:<34} model asks {len(asks):4d}  p50 {p50 * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms  "
        f"precomputed {np.mean(pre) * 100 if pre else 0:5.1f}% (their p99 {percentile(served, 99) * 1e3:6.1f} ms)  "
        f"errors {sum(r.errors for r in runs)}"
    )
    return p50, p99, text


def served_p99(runs: list[RunResult]) -> float:
    return percentile([s for r in runs for s, p in zip(r.model_ask_s, r.precomputed, strict=True) if p], 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rounds", type=int, default=2, help="each round runs every condition (fresh servers), in a rotating order"
    )
    parser.add_argument("--participants", type=int, default=16)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--response-time", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--viewers",
        default="browser",
        help="comma-separated viewers, each a condition beside 'without': browser (headless chromium), "
        "sse (plain HTTP readers doing what the pages' network does), idle (--dashboard on, no page open)",
    )
    parser.add_argument(
        "--browser-nice",
        type=int,
        default=0,
        help="renice the browser's processes (e.g. 19: a viewer on another machine, not competing for these cores)",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="time every event-loop callback and the loop's lag, in the server and in the participants' process",
    )
    parser.add_argument("--view", choices=["browser", "sse"], help=argparse.SUPPRESS)  # the viewer process
    parser.add_argument("--dashboard", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: still stop the servers and viewers it started
    if args.view:
        asyncio.run(view(args.view, args.dashboard, args.pages, args.browser_nice))
        return
    viewers = [v.strip() for v in args.viewers.split(",") if v.strip()]
    for v in viewers:
        if v not in ("browser", "sse", "idle"):
            parser.error(f"--viewers: unknown viewer {v!r} (browser, sse, idle)")
    conditions = ["without", *viewers]
    print(
        f"== dashboard cost: {args.participants} participants (novel detection, rt {args.response_time:g} s), "
        f"{args.pages} strategy pages, viewers {', '.join(viewers)} (browser nice {args.browser_nice}), {args.workers} workers, "
        f"{args.rounds} rounds; load average at start {os.getloadavg()[0]:.2f}"
    )
    cpu: dict[str, float] = {}
    runs_by: dict[str, list[RunResult]] = {c: [] for c in conditions}
    loadavg: list[float] = []
    probe_dir = tempfile.mkdtemp(prefix="dashprobe-")
    for round_index in range(args.rounds):
        order = conditions[round_index % len(conditions) :] + conditions[: round_index % len(conditions)]
        for condition in order:
            t0 = time.perf_counter()
            port = free_port()
            extra = ["--workers", str(args.workers)]
            if condition != "without":
                extra += ["--dashboard", "--dashboard-port", str(port)]
            probe_file = os.path.join(probe_dir, f"server-{round_index}-{condition}.json")
            wrapper = (
                [os.path.join(os.path.dirname(os.path.abspath(__file__)), "_loopprobe.py"), probe_file] if args.diagnose else None
            )
            viewer_cpu: dict[str, float] = {}
            loads: Counter[str] = Counter()
            with server_process(*extra, wrapper=wrapper) as (address, _db):
                if args.diagnose:  # the server's probe forgets its start-up (the dashboard starts after gRPC)
                    deadline = time.monotonic() + 60
                    while condition != "without" and time.monotonic() < deadline:
                        try:
                            socket.create_connection(("127.0.0.1", port), timeout=1).close()
                            break
                        except OSError:
                            time.sleep(0.05)
                    time.sleep(2.0)
                    os.kill(_server_pid(address), signal.SIGUSR1)

                runs, loads, viewer_cpu, client_probe = asyncio.run(
                    run_condition(args, condition, address, f"http://127.0.0.1:{port}")
                )
                server_cpu, _ = cpu_use(address)
                split = server_split(address)
            loadavg.append(os.getloadavg()[0])
            runs_by[condition] += runs
            cpu[condition] = cpu.get(condition, 0.0) + server_cpu
            cpu[f"{condition} viewer"] = cpu.get(f"{condition} viewer", 0.0) + sum(viewer_cpu.values())
            wall = time.perf_counter() - t0
            print(
                summary(f"round {round_index + 1}, {condition}", runs)[2]
                + f"  ({wall:.0f} s; server CPU {server_cpu:.0f} s"
                + (f", viewer CPU {sum(viewer_cpu.values()):.0f} s" if viewer_cpu else "")
                + f"; load {loadavg[-1]:.2f})",
                flush=True,
            )
            print("    server CPU by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in split.items()), flush=True)
            if viewer_cpu:
                print("    viewer CPU by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(viewer_cpu.items())), flush=True)
            if loads:
                print("    page traffic: " + ", ".join(f"{k}: {v}" for k, v in sorted(loads.items())), flush=True)
            if args.diagnose:
                for where, report in (("server", _read_json(probe_file)), ("participants' process", client_probe)):
                    if not report:
                        print(f"    {where}: no probe report", flush=True)
                        continue
                    print(
                        f"    {where} loop: {report['callbacks']} callbacks {report['callback_s']:.1f} s, >5 ms {report['callbacks_over_5ms']}, "
                        f">10 ms {report['callbacks_over_10ms']}; lag p50 {report['lag_p50_ms']:.2f} p99 {report['lag_p99_ms']:.1f} "
                        f"p99.9 {report['lag_p999_ms']:.1f} ms, >10 ms {report['lags_over_10ms']}, >20 ms {report['lags_over_20ms']} of {report['lag_samples']}",
                        flush=True,
                    )
                    for row in report["slow"][:8]:
                        print(
                            f"      {row['n']:5d} x, {row['total_ms']:8.1f} ms total, max {row['max_ms']:6.1f} ms  {row['what']}",
                            flush=True,
                        )
                    print(
                        f"    {where} stall samples (loop late > 4 ms; innermost frame first): {report['stall_samples']}",
                        flush=True,
                    )
                    for row in report["stalls"][:12]:
                        print(f"      {row['n']:5d}  {row['stack']}", flush=True)
    _, p99_without, text_without = summary("all rounds, without dashboard", runs_by["without"])
    print(text_without)
    for condition in viewers:
        _, p99_with, text_with = summary(f"all rounds, {condition}", runs_by[condition])
        print(text_with)
        print(
            f"  {condition}: model-phase ask p99 ratio (with / without): {p99_with / p99_without:.2f}x  (target <= 1.2x); "
            f"precomputed asks' p99 ratio {served_p99(runs_by[condition]) / served_p99(runs_by['without']):.2f}x; "
            f"server CPU {cpu[condition]:.0f} s / {cpu['without']:.0f} s = {cpu[condition] / max(cpu['without'], 1e-9):.2f}x; "
            f"viewer CPU {cpu[f'{condition} viewer']:.0f} s"
        )
    print(f"load average after each condition: {', '.join(f'{x:.2f}' for x in loadavg)}")


def _read_json(path: str) -> dict[str, Any]:
    try:
        with open(path) as f:
            return dict(json.load(f))
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    main()
