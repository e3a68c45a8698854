"""A stand-in observer for compiled Builder experiments: presses LEFT or RIGHT (seeded random) through XTest
on $DISPLAY every 0.3 s until terminated."""

import random
import time

from Xlib import XK, X, display
from Xlib.ext import xtest

d = display.Display()
codes = [d.keysym_to_keycode(XK.string_to_keysym(k)) for k in ("Left", "Right")]
rng = random.Random(5)
while True:
    code = rng.choice(codes)
    xtest.fake_input(d, X.KeyPress, code)
    xtest.fake_input(d, X.KeyRelease, code)
    d.sync()
    time.sleep(0.3)
