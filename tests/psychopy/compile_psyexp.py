"""Compile a .psyexp to a Python script with PsychoPy's compiler, plugins loaded first (as the Builder
app does at start-up). Usage: compile_psyexp.py IN.psyexp OUT.py"""

import sys

from psychopy import plugins

plugins.activatePlugins()
from psychopy.scripts.psyexpCompile import compileScript  # noqa: E402

compileScript(sys.argv[1], None, sys.argv[2])
