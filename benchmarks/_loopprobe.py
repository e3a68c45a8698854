"""Where an asyncio process's time goes, for benchmarks/dashboard.py --diagnose: every callback the
event loop runs is timed (the slow ones tallied by what they ran), and a thread asks the loop to run
a no-op every 10 ms and records how late it runs (loop busy + OS scheduling delay of the process).

Use in-process (`install()` from a running loop) or as a wrapper of a module:
`python _loopprobe.py OUT.json -m psyserve serve ...` (the report is written at exit, also on SIGTERM).
Benchmark-only diagnostics: nothing in the product imports this.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import runpy
import signal
import sys
import threading
import time
from collections import Counter, defaultdict
from types import FrameType
from typing import Any

SLOW = 0.002  # callbacks longer than this are tallied by label


def _stack(frame: FrameType | None, depth: int = 7) -> str:
    """The innermost frames (file:function:line), innermost first."""
    out: list[str] = []
    while frame is not None and len(out) < depth:
        code = frame.f_code
        out.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{code.co_name}:{frame.f_lineno}")
        frame = frame.f_back
    return " < ".join(out)


class Probe:
    def __init__(self) -> None:
        self.durations: list[float] = []
        self.slow: dict[str, list[float]] = defaultdict(list)
        self.lags: list[float] = []
        self.stalls: Counter[str] = Counter()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()

    def label(self, handle: asyncio.Handle) -> str:
        cb: Any = getattr(handle, "_callback", None)
        owner = getattr(cb, "__self__", None)
        if isinstance(owner, asyncio.Task):
            coro = owner.get_coro()
            frame = getattr(coro, "cr_frame", None)
            where = f"{frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno}" if frame is not None else "done"
            return f"task {getattr(coro, '__qualname__', coro)!s} @ {where}"
        name = getattr(cb, "__qualname__", None) or repr(cb)
        return f"callback {name}"[:160]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.loop is not None:
            return
        self.loop = loop
        _patch()

        main = threading.get_ident()  # the loop's thread

        def ticker() -> None:
            # every 10 ms: ask the loop to run a no-op; while it has not run for 4 ms, sample what the
            # loop's thread is doing every 2 ms (a sampling profile of the stalls)
            while not self._stop.wait(0.01):
                sent = time.perf_counter()
                ran = threading.Event()

                def mark(s: float = sent, ran: threading.Event = ran) -> None:
                    self.lags.append(time.perf_counter() - s)
                    ran.set()

                try:
                    loop.call_soon_threadsafe(mark)
                except RuntimeError:
                    return
                while not ran.wait(0.004 if time.perf_counter() - sent < 0.004 else 0.002):
                    if self._stop.is_set():
                        return
                    frame = sys._current_frames().get(main)
                    if frame is not None and not ran.is_set():
                        self.stalls[_stack(frame)] += 1

        threading.Thread(target=ticker, daemon=True, name="loopprobe").start()

    def report(self) -> dict[str, Any]:
        self._stop.set()

        def pct(values: list[float], q: float) -> float:
            if not values:
                return float("nan")
            ordered = sorted(values)
            return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

        slow = sorted(((k, len(v), sum(v), max(v)) for k, v in self.slow.items()), key=lambda r: -r[2])
        return {
            "callbacks": len(self.durations),
            "callback_s": sum(self.durations),
            "callback_p99_ms": pct(self.durations, 99) * 1e3,
            "callbacks_over_5ms": sum(d > 0.005 for d in self.durations),
            "callbacks_over_10ms": sum(d > 0.010 for d in self.durations),
            "lag_samples": len(self.lags),
            "lag_p50_ms": pct(self.lags, 50) * 1e3,
            "lag_p99_ms": pct(self.lags, 99) * 1e3,
            "lag_p999_ms": pct(self.lags, 99.9) * 1e3,
            "lags_over_10ms": sum(x > 0.010 for x in self.lags),
            "lags_over_20ms": sum(x > 0.020 for x in self.lags),
            "stall_samples": sum(self.stalls.values()),
            "stalls": [{"n": n, "stack": k} for k, n in self.stalls.most_common(25)],
            "slow": [{"what": k, "n": n, "total_ms": round(t * 1e3, 1), "max_ms": round(m * 1e3, 1)} for k, n, t, m in slow[:25]],
        }


PROBE = Probe()
_PATCHED = False


def _patch() -> None:
    """Time every callback of every loop in this process (into the current PROBE)."""
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    original = asyncio.events.Handle._run

    def timed_run(handle: asyncio.Handle) -> None:
        t0 = time.perf_counter()
        original(handle)
        dt = time.perf_counter() - t0
        PROBE.durations.append(dt)
        if dt > SLOW:
            PROBE.slow[PROBE.label(handle)].append(dt)

    asyncio.events.Handle._run = timed_run  # type: ignore[method-assign,assignment]


def install() -> Probe:
    """Start a fresh probe of the running loop (call from inside it); its report() ends it."""
    global PROBE
    PROBE._stop.set()
    PROBE = Probe()
    PROBE.start(asyncio.get_running_loop())
    return PROBE


def _wrap(out: str) -> None:
    original = asyncio.base_events.BaseEventLoop.run_forever

    def run_forever(self: asyncio.AbstractEventLoop) -> None:
        PROBE.start(self)
        original(self)  # type: ignore[arg-type]

    asyncio.base_events.BaseEventLoop.run_forever = run_forever  # type: ignore[method-assign]

    def dump() -> None:
        with open(out, "w") as f:
            json.dump(PROBE.report(), f, indent=1)

    atexit.register(dump)

    def reset(*_: object) -> None:  # SIGUSR1: forget the start-up, measure from now on
        PROBE.durations.clear()
        PROBE.slow.clear()
        PROBE.lags.clear()
        PROBE.stalls.clear()

    signal.signal(signal.SIGUSR1, reset)
    previous = signal.getsignal(signal.SIGTERM)
    if previous in (signal.SIG_DFL, None):

        def stop(*_: object) -> None:
            dump()
            sys.exit(0)

        signal.signal(signal.SIGTERM, stop)


if __name__ == "__main__":
    out_path, flag, module, *rest = sys.argv[1:]
    assert flag == "-m"
    _wrap(out_path)
    sys.argv = [module, *rest]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
