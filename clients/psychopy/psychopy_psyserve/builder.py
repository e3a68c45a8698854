"""PsychoPy Builder component for psyserve: asks at routine start, tells at routine end.

Registered through the `psychopy.experiment.components` entry point; PsychoPy's plugin loader imports this
module (and so PsychoPy) only when it loads plugins. It owns the Python code Builder writes for the
component; the trial logic itself lives in psychopy_psyserve.handler, which the written code uses.
It must not run anything at experiment time itself: it only writes code.
"""

from __future__ import annotations

from typing import Any, ClassVar

from psychopy.experiment.components import BaseComponent, Param, _translate


class PsyserveComponent(BaseComponent):
    """Ask psyserve for the next trial at the start of the routine (each parameter becomes a variable
    of that name, e.g. `$contrast` in a Grating's contrast) and tell it the outcome at the end of the
    routine, taken from a response component (its `.corr`, or an expression). Put it first in the
    routine so the parameters are set before the stimuli update."""

    categories: ClassVar[list[str]] = ["Custom", "Data"]
    targets: ClassVar[list[str]] = ["PsychoPy"]
    tooltip = _translate("psyserve: model-based adaptive trials from a psyserve server")
    plugin = "psychopy-psyserve"

    def __init__(
        self,
        exp: Any,
        parentName: str,
        name: str = "psyserve",
        server: str = "127.0.0.1:50051",
        config: str = "",
        strategyName: str = "",
        responseComponent: str = "key_resp",
        outcome: str = "",
        nTrials: str = "",
        endLoop: bool = True,
        retryTimeout: str = "120",
        disabled: bool = False,
    ) -> None:
        super().__init__(exp, parentName, name=name, disabled=disabled)
        exp.requireImport(importName="PsyserveHandler", importFrom="psychopy_psyserve")
        self.type = "Psyserve"
        self.url = "https://github.com/psyserve/psyserve#psychopy--use-it"
        for unused in ("startType", "startVal", "startEstim", "stopType", "stopVal", "durationEstim", "syncScreenRefresh", "saveStartStop"):
            self.params.pop(unused, None)
        self.order += ["server", "config", "strategyName", "responseComponent", "outcome", "nTrials", "endLoop", "retryTimeout"]
        self.params["server"] = Param(
            server, valType="str", inputType="single", categ="Basic", updates="constant",
            hint=_translate("Address of the psyserve server (host:port)"), label=_translate("Server"),
        )
        self.params["config"] = Param(
            config, valType="file", inputType="file", categ="Basic", updates="constant",
            hint=_translate("AEPsych/psyserve INI config of the strategy (path relative to the experiment)"),
            label=_translate("Config (INI)"),
        )
        self.params["strategyName"] = Param(
            strategyName, valType="str", inputType="single", categ="Basic", updates="constant",
            hint=_translate("Name of the strategy on the server (e.g. $expInfo['participant']); empty for none. "
                            "An existing name is resumed instead of configured."),
            label=_translate("Strategy name"),
        )
        self.params["responseComponent"] = Param(
            responseComponent, valType="code", inputType="single", categ="Basic", updates="constant",
            hint=_translate("Name of the response component whose answer is told at the end of the routine"),
            label=_translate("Response component"),
        )
        self.params["outcome"] = Param(
            outcome, valType="code", inputType="single", categ="Basic", updates="constant",
            hint=_translate("Expression giving the outcome (1/0); empty: the response component's .corr"),
            label=_translate("Outcome"),
        )
        self.params["nTrials"] = Param(
            nTrials, valType="code", inputType="single", categ="Basic", updates="constant",
            hint=_translate("At most this many trials (empty: until the server's strategy is finished)"),
            label=_translate("Max trials"),
        )
        self.params["endLoop"] = Param(
            endLoop, valType="bool", inputType="bool", categ="Basic", updates="constant",
            hint=_translate("End the enclosing loop when the strategy is finished"),
            label=_translate("End loop when finished"),
        )
        self.params["retryTimeout"] = Param(
            retryTimeout, valType="code", inputType="single", categ="Basic", updates="constant",
            hint=_translate("Seconds to keep retrying while the server is unreachable"),
            label=_translate("Retry timeout (s)"),
        )

    def writeStartCode(self, buff: Any) -> None:
        code = (
            "# --- psyserve: connect %(name)s (configure a new strategy, or resume one by name) ---\n"
            "%(name)s = PsyserveHandler.open(\n"
            "    %(server)s, config=%(config)s, strategyName=%(strategyName)s or None, name=%(nameStr)s,\n"
            "    nTrials=%(nTrialsCode)s, retryTimeout=%(retryTimeout)s, extraInfo=expInfo)\n"
            "thisExp.addLoop(%(name)s)\n"
            "%(name)sParams = {}\n"
        )
        buff.writeIndentedLines(code % self._values())

    def _values(self) -> dict[str, Any]:
        values: dict[str, Any] = {k: v for k, v in self.params.items()}
        values["nameStr"] = repr(str(self.params["name"].val))
        n = str(self.params["nTrials"].val).strip()
        values["nTrialsCode"] = n if n else "None"
        out = str(self.params["outcome"].val).strip()
        values["outcomeCode"] = out if out else f"{self.params['responseComponent']}.corr"
        return values

    def writeRoutineStartCode(self, buff: Any) -> None:
        values = self._values()
        code = (
            "# --- psyserve: ask %(name)s for this trial's parameters ---\n"
            "try:\n"
            "    %(name)sParams = next(%(name)s)\n"
            "except StopIteration:\n"
            "    %(name)sParams = None\n"
            "if %(name)sParams is None:\n"
            "    continueRoutine = False  # the strategy is finished\n"
        )
        if self.params["endLoop"].val:
            code += (
                "    if currentLoop is not thisExp and currentLoop is not %(name)s:\n"
                "        currentLoop.finished = True\n"
            )
        code += (
            "else:\n"
            "    for _psyserveName, _psyserveValue in %(name)sParams.items():\n"
            "        globals()[_psyserveName] = _psyserveValue\n"
        )
        buff.writeIndentedLines(code % values)

    def writeRoutineEndCode(self, buff: Any) -> None:
        values = self._values()
        code = (
            "# --- psyserve: tell %(name)s this trial's outcome ---\n"
            "if %(name)sParams is not None:\n"
            "    _psyserveRt = getattr(%(responseComponent)s, 'rt', None)\n"
            "    if isinstance(_psyserveRt, (list, tuple)):\n"
            "        _psyserveRt = _psyserveRt[-1] if _psyserveRt else None\n"
            "    _psyserveKeys = getattr(%(responseComponent)s, 'keys', None)\n"
            "    if _psyserveKeys is not None:\n"
            "        %(name)s.addOtherData('%(responseComponent)s.keys', _psyserveKeys)\n"
            "    %(name)s.addResponse(int(%(outcomeCode)s), rt=_psyserveRt if isinstance(_psyserveRt, (int, float)) else None)\n"
        )
        buff.writeIndentedLines(code % values)

    def writeExperimentEndCode(self, buff: Any) -> None:
        buff.writeIndentedLines(f"{self.params['name']}.close()  # psyserve: send anything unsent, close the connection\n")
