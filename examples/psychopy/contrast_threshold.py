"""Contrast-threshold experiment in PsychoPy, with psyserve choosing each grating's contrast and frequency.

    psyserve serve --port 50051 &                      # the server (main venv)
    .venv-psychopy/bin/python examples/psychopy/contrast_threshold.py --participant P01

Each trial: a fixation cross, a grating at the asked contrast and spatial frequency for 0.3 s, then the
observer presses LEFT (seen) or RIGHT (not seen); ESCAPE ends the session. Every trial lands in the
ExperimentHandler's CSV (one column per parameter) and in the server's journal. `--simulate` replaces the
observer by a simulated one who presses the keys through the X server (XTest), so the whole path (window,
drawing, keyboard events) runs unattended, e.g. under Xvfb in CI.

This script owns only the experiment; adaptive logic is the server's, trial bookkeeping the handler's.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path
from typing import Any

from psychopy import core, data, event, plugins, visual

plugins.activatePlugins()  # psychopy-psyserve registers psychopy.data.PsyserveHandler
from psychopy.data import PsyserveHandler  # type: ignore[attr-defined]  # noqa: E402

HERE = Path(__file__).resolve().parent


class XTestObserver:
    """A simulated observer: sees a grating with probability following a Weibull psychometric function of
    contrast whose threshold rises with spatial frequency, and presses LEFT/RIGHT through XTest (real X
    key events, delivered to the window like a keyboard's)."""

    def __init__(self, seed: int, delay: float) -> None:
        from Xlib import XK, X, display
        from Xlib.ext import xtest

        self._display = display.Display()
        self._x, self._xtest = X, xtest
        self._codes = {k: self._display.keysym_to_keycode(XK.string_to_keysym(k)) for k in ("Left", "Right")}
        self.rng = random.Random(seed)
        self.delay = delay

    @staticmethod
    def p_seen(contrast: float, frequency: float) -> float:
        threshold = 0.02 * math.exp(0.3 * frequency)
        return 0.02 + 0.96 * (1 - math.exp(-((contrast / threshold) ** 2.5)))

    def respond(self, contrast: float, frequency: float) -> None:
        key = "Left" if self.rng.random() < self.p_seen(contrast, frequency) else "Right"
        for kind in (self._x.KeyPress, self._x.KeyRelease):
            self._xtest.fake_input(self._display, kind, self._codes[key])
        self._display.sync()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default="127.0.0.1:50051")
    ap.add_argument("--config", default=str(HERE / "contrast.ini"), help="INI config of the strategy")
    ap.add_argument("--participant", default="", help="strategy name on the server (resumed if it exists)")
    ap.add_argument("--data", default=str(HERE / "data"), help="folder for the CSV and psydat files")
    ap.add_argument("--max-trials", type=int, default=None)
    ap.add_argument("--simulate", action="store_true", help="a simulated observer presses the keys (XTest)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size", type=int, default=500, help="window size in pixels")
    args = ap.parse_args(argv)

    Path(args.data).mkdir(parents=True, exist_ok=True)
    stem = str(Path(args.data) / f"contrast_{args.participant or 'anon'}_{data.getDateStr()}")
    exp = data.ExperimentHandler(
        name="contrast_threshold", extraInfo={"participant": args.participant}, dataFileName=stem, savePickle=False, saveWideText=False
    )
    handler = PsyserveHandler.open(
        args.server, config=args.config, strategyName=args.participant or None, name="trials", nTrials=args.max_trials
    )
    exp.addLoop(handler)

    win = visual.Window((args.size, args.size), units="height", color=0.0, fullscr=False, winType="pyglet", allowGUI=False)
    grating = visual.GratingStim(win, tex="sin", mask="gauss", size=0.5, sf=1.0, contrast=1.0)
    fixation = visual.TextStim(win, text="+", height=0.05, color=-1)
    prompt = visual.TextStim(win, text="seen?  LEFT = yes   RIGHT = no", height=0.03, pos=(0, -0.4), color=-1)
    observer = XTestObserver(args.seed, delay=0.05) if args.simulate else None
    clock = core.Clock()

    for params in handler:
        contrast, frequency = float(params["contrast"]), float(params["frequency"])
        grating.contrast, grating.sf = contrast, frequency  # sf in cycles per window height
        for _ in range(6):  # fixation, ~0.1 s at 60 Hz
            fixation.draw()
            win.flip()
        event.clearEvents()
        win.callOnFlip(clock.reset)
        for frame in range(18):  # the grating, ~0.3 s
            grating.draw()
            win.flip()
            if observer is not None and frame == 3:
                observer.respond(contrast, frequency)
        keys: list[Any] = []
        while not keys:
            prompt.draw()
            win.flip()
            keys = event.getKeys(keyList=["left", "right", "escape"], timeStamped=clock)
        key, rt = keys[0]
        if key == "escape":
            break
        handler.addOtherData("key", key)
        handler.addResponse(1 if key == "left" else 0, rt=rt)
        exp.nextEntry()

    handler.close()
    exp.saveAsWideText(stem + ".csv", delim=",")
    handler.saveAsPickle(stem)
    print(f"{handler.thisTrialN + 1} trials; strategy {handler.strategyId}; data in {stem}.csv")
    if handler.finished:
        try:
            print("75% contrast threshold at 2 c/unit:", handler.threshold(0.75, frequency=2.0))
        except Exception as exc:  # a model read-out needs a server with models (not --no-models)
            print("no threshold:", exc)
    win.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
