"""What watching costs the experiment: model-phase ask latency with 16 participants, with and
without 4 dashboard pages open in a real browser, in one run (rounds alternate the two).

Each round starts a fresh server (subprocess on 127.0.0.1) for each condition: "without" is a
plain `psyserve serve`; "with" is `psyserve serve --dashboard` (so /metrics instrumentation is on
too) with 4 strategy pages open in headless chromium (Debian's, through Playwright) on this same
machine, live-updating their trial table and plots. The participants are psychophysics.py's
(novel detection, 10 Sobol + 40 model trials, response time 1 s), same seeds in both conditions.

Usage (from benchmarks/): python dashboard.py [--rounds 2] [--participants 16] [--pages 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter

import numpy as np

import psyserve_client as pc
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
    return list(await asyncio.gather(*(run_participant(address, "novel_detection", 1000 + i, response_time, False) for i in range(count))))


async def watched(
    address: str, dashboard: str, count: int, pages: int, response_time: float, browser_nice: int = 0
) -> tuple[list[RunResult], Counter[str], float]:
    from playwright.async_api import async_playwright

    loads: Counter[str] = Counter()
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            run = asyncio.ensure_future(participants(address, count, response_time))
            async with pc.AsyncClient(address) as client:  # open the pages once their strategies exist
                deadline = time.monotonic() + 60
                while len(await client.list_strategies()) < pages and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            opened = []
            for sid in range(1, pages + 1):
                page = await browser.new_page(viewport={"width": 1400, "height": 1000})

                def count(response: object, sid: int = sid) -> None:
                    url = getattr(response, "url", "")
                    if "/plot/" in url:
                        loads[f"plot images (page {sid})"] += 1
                    elif f"/api/strategies/{sid}" in url:
                        loads[f"table refreshes (page {sid})"] += 1

                page.on("response", count)
                await page.goto(f"{dashboard}/s/{sid}")
                opened.append(page)
            if browser_nice:  # the browser stands in for a viewer on another machine: give it only idle CPU
                procs = _processes()
                port = address.rsplit(":", 1)[1]
                server = next(pid for pid, (_, _, cmd) in procs.items() if "psyserve serve" in cmd and f"--port {port} " in cmd)
                spared = _descendants(procs, server) | {os.getpid()}
                for pid in _descendants(procs, os.getpid()) - spared:
                    # every thread: on Linux a nice value is per thread, and chromium raises some of its own
                    tids = os.listdir(f"/proc/{pid}/task") if os.path.isdir(f"/proc/{pid}/task") else [str(pid)]
                    for tid in tids:
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, int(tid), browser_nice)
            results = await run
            procs = _processes()
            by_type: Counter[str] = Counter()
            for pid in _descendants(procs, os.getpid()) - {os.getpid()}:
                cmd = procs[pid][2]
                if "psyserve serve" in cmd or "spawn_main" in cmd:
                    continue
                kind = cmd.split("--type=", 1)[1].split()[0] if "--type=" in cmd else ("chromium" if "chromium" in cmd else "driver")
                by_type[kind] += procs[pid][1]
            loads.update({f"browser CPU s ({k})": round(v) for k, v in by_type.items()})
            browser_cpu = _tree_cpu(procs, os.getpid()) - procs[os.getpid()][1]
            port = address.rsplit(":", 1)[1]
            server = next(pid for pid, (_, _, cmd) in procs.items() if "psyserve serve" in cmd and f"--port {port} " in cmd)
            browser_cpu -= _tree_cpu(procs, server)
        finally:
            await browser.close()
    return results, loads, browser_cpu


def summary(label: str, runs: list[RunResult]) -> tuple[float, float, str]:
    asks = [s for r in runs for s in r.model_ask_s]
    pre = [p for r in runs for p in r.precomputed]
    p50, p99 = percentile(asks, 50), percentile(asks, 99)
    text = (
        f"{label:<34} model asks {len(asks):4d}  p50 {p50 * 1e3:6.1f} ms  p99 {p99 * 1e3:6.1f} ms  "
        f"precomputed {np.mean(pre) * 100 if pre else 0:5.1f}%  errors {sum(r.errors for r in runs)}"
    )
    return p50, p99, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="each round runs both conditions (fresh servers)")
    parser.add_argument("--participants", type=int, default=16)
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--response-time", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--browser-nice", type=int, default=0, help="renice the browser's processes (e.g. 19: a viewer on another machine, not competing for these cores)"
    )
    args = parser.parse_args()
    print(
        f"== dashboard cost: {args.participants} participants (novel detection, rt {args.response_time:g} s), "
        f"{args.pages} strategy pages in headless chromium (nice {args.browser_nice}), {args.workers} workers, {args.rounds} rounds"
    )
    cpu: Counter[str] = Counter()
    without: list[RunResult] = []
    with_pages: list[RunResult] = []
    for round_index in range(args.rounds):
        order = ("without", "with") if round_index % 2 == 0 else ("with", "without")
        for condition in order:
            t0 = time.perf_counter()
            if condition == "without":
                with server_process("--workers", str(args.workers)) as (address, _db):
                    runs = asyncio.run(participants(address, args.participants, args.response_time))
                    server_cpu, browser_cpu = cpu_use(address)
                    split = server_split(address)
                without += runs
                cpu["without"] += server_cpu
                loads: Counter[str] = Counter()
            else:
                port = free_port()
                with server_process("--workers", str(args.workers), "--dashboard", "--dashboard-port", str(port)) as (address, _db):
                    runs, loads, browser_cpu = asyncio.run(
                        watched(address, f"http://127.0.0.1:{port}", args.participants, args.pages, args.response_time, args.browser_nice)
                    )
                    server_cpu, _ = cpu_use(address)
                    split = server_split(address)
                with_pages += runs
                cpu["with"] += server_cpu
                cpu["browser"] += browser_cpu
            wall = time.perf_counter() - t0
            print(
                summary(f"round {round_index + 1}, {condition} dashboard", runs)[2]
                + f"  ({wall:.0f} s; server CPU {server_cpu:.0f} s"
                + (f", browser CPU {browser_cpu:.0f} s)" if condition == "with" else ")"),
                flush=True,
            )
            print("    server CPU by part: " + ", ".join(f"{k} {v:.1f} s" for k, v in split.items()), flush=True)
            if loads:
                print("    page traffic: " + ", ".join(f"{k}: {v}" for k, v in sorted(loads.items())), flush=True)
    _, p99_without, text_without = summary("all rounds, without dashboard", without)
    _, p99_with, text_with = summary(f"all rounds, {args.pages} pages open", with_pages)
    print(text_without)
    print(text_with)
    print(f"model-phase ask p99 ratio (with / without): {p99_with / p99_without:.2f}x  (target <= 1.2x)")
    print(
        f"server CPU (process, workers, render process) with / without pages: {cpu['with']:.0f} s / {cpu['without']:.0f} s "
        f"= {cpu['with'] / max(cpu['without'], 1e-9):.2f}x; browser (4 pages + driver): {cpu['browser']:.0f} s"
    )


if __name__ == "__main__":
    main()
