"""Writes contrast_builder.psyexp: the Builder version of contrast_threshold.py, made with PsychoPy's
experiment API (a `trials` loop around one routine: the psyserve component first, a grating at $contrast /
$frequency, a keyboard whose LEFT = seen is told at the routine's end).

    .venv-psychopy/bin/python examples/psychopy/make_builder_example.py [out.psyexp]

With the Pyglet keyboard backend PsychoPy 2026.2 reports a key's name as [name, time], so the outcome
expression tests `'left' in str(key_resp.keys)`, which holds for either form.
The server address comes from $PSYSERVE_ADDRESS (default 127.0.0.1:50051) when the compiled script runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from psychopy import experiment, plugins

plugins.activatePlugins()
from psychopy.experiment.components import getAllComponents  # noqa: E402
from psychopy.experiment.loops import TrialHandler  # noqa: E402


def build(out: str) -> None:
    comps = getAllComponents()
    exp = experiment.Experiment()
    settings = exp.settings.params
    settings["Full-screen window"].val = False
    settings["Window size (pixels)"].val = (500, 500)
    settings["Show info dlg"].val = False
    settings["Save psydat file"].val = False
    settings["Save log file"].val = False
    settings["Enable Escape"].val = False
    # Pyglet key events: psychtoolbox (PsychoPy's default keyboard backend) is not installed in .venv-psychopy,
    # and PsychoPy 2026.2 keeps an explicitly requested 'ptb' backend even when psychtoolbox is missing
    # (its keyboard then never reports a key).
    settings["keyboardBackend"].val = "Pyglet"
    trial = exp.addRoutine("trial")
    psyserve = comps["PsyserveComponent"](
        exp, "trial", name="psyserve",
        server="$os.environ.get('PSYSERVE_ADDRESS', '127.0.0.1:50051')",
        config="contrast.ini", strategyName="$expInfo['participant']",
        responseComponent="key_resp", outcome="'left' in str(key_resp.keys)",
    )
    grating = comps["GratingComponent"](exp, "trial", name="grating", contrast="contrast", sf="frequency", size=(0.5, 0.5), stopVal="")
    for param in ("contrast", "sf"):
        grating.params[param].updates = "set every repeat"
    key_resp = comps["KeyboardComponent"](exp, "trial", name="key_resp", allowedKeys="", forceEndRoutine=True, storeCorrect=False, stopVal="")
    for component in (psyserve, grating, key_resp):  # psyserve first: the parameters are set before the grating updates
        trial.addComponent(component)
    exp.flow.addRoutine(trial, 0)
    loop = TrialHandler(exp, name="trials", nReps=1000, loopType="sequential", conditions=[], conditionsFile="")
    exp.flow.addLoop(loop, startPos=0, endPos=1)
    exp.saveToXML(out)


if __name__ == "__main__":
    build(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).with_name("contrast_builder.psyexp")))
