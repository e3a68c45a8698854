"""What one open dashboard page costs the browser: chromium CPU seconds per page-minute for two
versions of the page's script (dashboard.js at a git revision, and the working tree's), in one run.

Each variant gets its own server (`psyserve serve --dashboard`, the variant's dashboard.js served
in place of the installed one), its own participants (psychophysics.py's novel detection, 10 Sobol
+ 40 model trials, response time 1 s: a tell about every second per strategy, as in dashboard.py)
and its own headless chromium (Debian's, through Playwright) with one strategy page per
participant. Both variants run at the same time, so they share the machine's load. Reported per
variant: chromium CPU by process type (renderers, browser, GPU/viz, utilities; Playwright's driver
apart), the renderers' main-thread time from CDP Performance metrics (script, layout, style), the
pages' requests, and CPU-s per page-minute and per trial shown (the pages show the same
trials in both variants, whatever the pace). `--trace S` also records S seconds of a chromium
trace in the middle of the run and prints where each variant's threads spent their time (self time
by thread and event, all processes).

Usage (from benchmarks/): python dashboard_page.py [--before REV] [--pages 4] [--trace 20]
Timing-free: figures are CPU seconds, but run it with the benchmark lock all the same (it loads
the machine, and a concurrent timing run would pay for it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from dashboard import CHROMIUM, CHROMIUM_ARGS, _descendants, _open_pages, _processes, _wait_for_strategies

from _harness import free_port, server_process
from psychophysics import run_participant

ROOT = Path(__file__).resolve().parent.parent
JS = "server/psyserve/dashboard/static/dashboard.js"
TRACE_CATEGORIES = [
    "toplevel",
    "devtools.timeline",
    "disabled-by-default-devtools.timeline",
    "blink",
    "cc",
    "viz",
    "gpu",
    "v8",
    "loading",
    "netlog",
]


def _serve_with_script(script: str, argv: list[str]) -> None:
    """`python dashboard_page.py --serve-with-script FILE -m psyserve serve ...`: the server, with
    FILE served as /static/dashboard.js."""
    import psyserve.dashboard.app as dashboard_app

    dashboard_app._ASSETS["dashboard.js"] = (Path(script).read_bytes(), dashboard_app._ASSETS["dashboard.js"][1])
    assert argv[0] == "-m"
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def self_times(trace: dict[str, Any]) -> tuple[Counter[tuple[str, str, str]], Counter[tuple[str, str]]]:
    """Self time (ms) by (process, thread, event) and busy time (ms) by (process, thread): the
    trace's complete (X) and begin/end (B/E) events, nested per thread, in thread CPU time where the
    event has it (tdur / tts: time on a core, not time waiting for one), else wall time."""
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    process_names: dict[int, str] = {}
    thread_names: dict[tuple[int, int], str] = {}
    for e in events:
        if e.get("ph") == "M" and e.get("name") == "process_name":
            process_names[e["pid"]] = e["args"].get("name", "?")
        elif e.get("ph") == "M" and e.get("name") == "thread_name":
            thread_names[(e["pid"], e["tid"])] = e["args"].get("name", "?")
    # per thread and clock ("tts": thread time, "ts": wall time): spans (start, end, name)
    spans: dict[tuple[int, int, str], list[tuple[float, float, str]]] = defaultdict(list)
    open_: dict[tuple[int, int, str], list[tuple[float, str]]] = defaultdict(list)
    for e in sorted((e for e in events if e.get("ph") in ("X", "B", "E")), key=lambda e: e["ts"]):
        clock = "tts" if "tts" in e else "ts"
        key = (e["pid"], e["tid"], clock)
        if e["ph"] == "X":
            spans[key].append((e[clock], e[clock] + e.get("tdur" if clock == "tts" else "dur", 0), e["name"]))
        elif e["ph"] == "B":
            open_[key].append((e[clock], e["name"]))
        elif open_[key]:
            start, name = open_[key].pop()
            spans[key].append((start, e[clock], name))
    for pid, tid, clock in list(spans):  # a thread with thread times: only those
        if clock == "ts" and (pid, tid, "tts") in spans:
            del spans[(pid, tid, clock)]
    selfs: Counter[tuple[str, str, str]] = Counter()
    busy: Counter[tuple[str, str]] = Counter()
    for key, items in spans.items():
        proc = process_names.get(key[0], str(key[0]))
        thread = thread_names.get(key[:2], str(key[1])) + (" (wall)" if key[2] == "ts" else "")
        items.sort(key=lambda s: (s[0], -s[1]))
        stack: list[list[Any]] = []  # [start, end, name, child time]
        for start, end, name in [*items, (float("inf"), float("inf"), "")]:
            while stack and (stack[-1][1] <= start or start == float("inf")):
                done = stack.pop()
                selfs[(proc, thread, done[2])] += (done[1] - done[0] - done[3]) / 1000
                if stack:
                    stack[-1][3] += done[1] - done[0]
                else:
                    busy[(proc, thread)] += (done[1] - done[0]) / 1000
            if start != float("inf"):
                stack.append([start, min(end, stack[-1][1]) if stack else end, name, 0.0])
    return selfs, busy


async def view(dashboard: str, pages: int, trace_s: float, trace_at: float, out: str) -> None:
    """The viewer process: opens `pages` strategy pages in one chromium, follows them until a line
    arrives on stdin, then prints one JSON line (CPU by process type, CDP metrics, requests)."""
    from playwright.async_api import async_playwright

    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    report: dict[str, Any] = {"cdp": Counter(), "requests": Counter()}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            print("ready", flush=True)
            await _wait_for_strategies(dashboard, pages)
            opened = await _open_pages(browser, dashboard, pages)
            cpu0 = _tree(os.getpid())
            t0 = time.monotonic()
            stop = asyncio.ensure_future(stdin.readline())
            if trace_s:
                await asyncio.wait([stop], timeout=trace_at)
                if not stop.done():
                    await browser.start_tracing(categories=TRACE_CATEGORIES)
                    await asyncio.wait([stop], timeout=trace_s)
                    Path(out).write_bytes(await browser.stop_tracing())
                    report["trace_s"] = trace_s
            await stop
            report["seconds"] = time.monotonic() - t0
            for sid, (page, cdp) in enumerate(opened, 1):
                urls = await page.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
                for u in urls:
                    what = (
                        "plot image"
                        if "/plot/" in u
                        else "trial feed"
                        if f"/api/strategies/{sid}" in u
                        else "event feed"
                        if "/api/events" in u
                        else u.rsplit("/", 1)[-1].split("?")[0]
                    )
                    report["requests"][what] += 1
                metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
                for name in (
                    "TaskDuration",
                    "ScriptDuration",
                    "LayoutDuration",
                    "RecalcStyleDuration",
                    "LayoutCount",
                    "RecalcStyleCount",
                    "Nodes",
                    "JSHeapUsedSize",
                ):
                    report["cdp"][name] += metrics.get(name, 0.0)
                report["rows"] = report.get("rows", 0) + await page.locator("tr[data-trial]").count()
            cpu1 = _tree(os.getpid())
            report["cpu"] = {k: cpu1.get(k, 0.0) - cpu0.get(k, 0.0) for k in cpu1}
        finally:
            await browser.close()
    print(json.dumps(report), flush=True)


def _tree(root: int) -> dict[str, float]:
    """CPU seconds so far of `root`'s descendants by chromium process type (driver: Playwright's)."""
    procs = _processes()
    out: dict[str, float] = {}
    for pid in _descendants(procs, root) - {root}:
        cmd = procs[pid][2]
        what = cmd.split("--type=", 1)[1].split()[0] if "--type=" in cmd else ("browser" if "chromium" in cmd else "driver")
        out[what] = out.get(what, 0.0) + procs[pid][1]
    return out


async def run_variant(name: str, script: str, args: argparse.Namespace, seed0: int, trace_file: str) -> dict[str, Any]:
    port = free_port()
    wrapper = [os.path.abspath(__file__), "--serve-with-script", script]
    with server_process("--workers", str(args.workers), "--dashboard", "--dashboard-port", str(port), wrapper=wrapper) as (
        address,
        _db,
    ):
        dashboard = f"http://127.0.0.1:{port}"
        viewer = await asyncio.create_subprocess_exec(
            sys.executable, os.path.abspath(__file__), "--view", dashboard, "--pages", str(args.pages),
            "--trace", str(args.trace), "--trace-at", str(args.trace_at), "--trace-file", trace_file,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert viewer.stdin is not None and viewer.stdout is not None
        try:
            line = await asyncio.wait_for(viewer.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"{name}: the viewer did not start: {line!r}")
            await asyncio.gather(
                *(run_participant(address, "novel_detection", seed0 + i, args.response_time, False) for i in range(args.pages))
            )
            viewer.stdin.write(b"stop\n")
            await viewer.stdin.drain()
            report: dict[str, Any] = json.loads(await asyncio.wait_for(viewer.stdout.readline(), 120))
            await asyncio.wait_for(viewer.wait(), 60)
        finally:
            if viewer.returncode is None:
                viewer.kill()
                await viewer.wait()
    return report


def _script_at(rev: str, tmp: str) -> str:
    if rev == "WORKTREE":
        return str(ROOT / JS)
    if os.path.isfile(rev):  # a file: that script
        return os.path.abspath(rev)
    path = os.path.join(tmp, f"dashboard-{rev.replace('/', '_')}.js")
    Path(path).write_bytes(
        subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{JS}"], check=True, capture_output=True).stdout
    )
    return path


async def compare(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        variants = {"before": _script_at(args.before, tmp), "after": _script_at(args.after, tmp)}
        traces = {v: os.path.join(args.trace_dir or tmp, f"trace-{v}.json") for v in variants}
        print(
            f"== dashboard page cost: {args.pages} strategy pages per variant, one tell/s per strategy; "
            f"before = {args.before}, after = {args.after}; load average at start {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        reports = await asyncio.gather(*(run_variant(v, s, args, 1000, traces[v]) for v, s in variants.items()))
        load = os.getloadavg()[0]
        for (variant, _), r in zip(variants.items(), reports, strict=True):
            page_min = args.pages * r["seconds"] / 60
            chromium = sum(v for k, v in r["cpu"].items() if k != "driver")
            cdp = r["cdp"]
            print(
                f"{variant:<7} chromium {chromium:5.1f} CPU-s over {args.pages} pages x {r['seconds']:.0f} s = "
                f"**{chromium / page_min:.2f} CPU-s per page-minute**, {chromium / max(1, r.get('rows', 0)) * 1e3:.0f} ms per "
                f"trial shown (asked and told; Playwright driver {r['cpu'].get('driver', 0):.1f} s)"
            )
            print(
                "        by process type: "
                + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1]))
            )
            print(
                f"        renderer main thread (CDP, all pages): task {cdp['TaskDuration']:.1f} s, script {cdp['ScriptDuration']:.2f} s, "
                f"layout {cdp['LayoutDuration']:.2f} s ({cdp['LayoutCount']:.0f}), style {cdp['RecalcStyleDuration']:.2f} s "
                f"({cdp['RecalcStyleCount']:.0f}), nodes {cdp['Nodes']:.0f}, table rows {r.get('rows', 0)}"
            )
            print("        requests: " + ", ".join(f"{k} {v}" for k, v in sorted(r["requests"].items(), key=lambda kv: -kv[1])))
            if r.get("trace_s"):
                selfs, busy = self_times(json.loads(Path(traces[variant]).read_text()))
                per = args.pages * r["trace_s"] / 60
                print(f"        trace, {r['trace_s']:.0f} s: busiest threads (ms per page-minute):")
                for (proc, thread), ms in busy.most_common(8):
                    print(f"          {ms / per:8.0f}  {proc} / {thread}")
                print("        top self time (ms per page-minute):")
                for (proc, thread, name), ms in selfs.most_common(args.top):
                    print(f"          {ms / per:8.0f}  {proc} / {thread} / {name}")
        print(f"load average at the end: {load:.2f}")


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve-with-script":
        _serve_with_script(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--before",
        default="ed95a76",
        help="git revision (or a file) whose dashboard.js is 'before' (WORKTREE: the working tree's)",
    )
    parser.add_argument(
        "--after", default="WORKTREE", help="git revision (or a file) whose dashboard.js is 'after' (default: the working tree's)"
    )
    parser.add_argument("--pages", type=int, default=4, help="strategy pages (and participants) per variant")
    parser.add_argument("--response-time", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--trace", type=float, default=0.0, help="record this many seconds of a chromium trace per variant")
    parser.add_argument("--trace-at", type=float, default=20.0, help="start the trace this many seconds after the pages opened")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--trace-dir", help="keep the traces (trace-before.json, trace-after.json) in this folder")
    parser.add_argument("--view", help=argparse.SUPPRESS)
    parser.add_argument("--trace-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.view:
        asyncio.run(view(args.view, args.pages, args.trace, args.trace_at, args.trace_file))
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(compare(args))


if __name__ == "__main__":
    main()
