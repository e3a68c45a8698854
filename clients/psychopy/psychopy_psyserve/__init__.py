"""psychopy-psyserve: PsychoPy trial handlers and a Builder component backed by a psyserve server.

`from psychopy_psyserve import PsyserveHandler, MultiPsyserveHandler` works without PsychoPy; once PsychoPy
has loaded its plugins (`psychopy.plugins.activatePlugins()`), the same classes are `psychopy.data.*`.
The Builder component (`psychopy_psyserve.builder`) imports PsychoPy and is loaded only by PsychoPy.
This package must not import PsychoPy at import time.
"""

from .handler import ConnectionLostError, MultiPsyserveHandler, PsyserveHandler

__all__ = ["ConnectionLostError", "MultiPsyserveHandler", "PsyserveHandler"]
__version__ = "0.1.0"
