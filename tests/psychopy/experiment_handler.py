"""Run in .venv-psychopy by tests/test_psychopy.py: load the plugin the way PsychoPy does, run a
PsyserveHandler inside an ExperimentHandler, save the CSV (and the handler's text/Excel files), and print
a JSON report on the last line. Usage: experiment_handler.py ADDRESS CONFIG OUTDIR"""

import json
import sys
from pathlib import Path

from psychopy import data, plugins

plugins.activatePlugins()
from psychopy.data import PsyserveHandler  # noqa: E402

import psychopy_psyserve  # noqa: E402

address, config, outdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
exp = data.ExperimentHandler(name="t", dataFileName=str(outdir / "exp"), savePickle=False, saveWideText=False)
handler = PsyserveHandler(address, config=config, name="trials")
exp.addLoop(handler)
for _params in handler:
    n = handler.thisTrialN
    handler.addOtherData("key", "left" if n % 2 else "right")
    handler.addResponse(n % 2, rt=0.5)
    exp.nextEntry()
exp.saveAsWideText(str(outdir / "exp.csv"), delim=",")
text = handler.saveAsText(str(outdir / "handler.tsv"))
excel = handler.saveAsExcel(str(outdir / "handler.xlsx"))
import openpyxl  # noqa: E402

rows = list(openpyxl.load_workbook(excel)["data"].iter_rows(values_only=True))
print(json.dumps({
    "plugin_loaded": "psychopy-psyserve" in plugins.listPlugins("loaded"),
    "same_class": data.PsyserveHandler is psychopy_psyserve.PsyserveHandler and data.MultiPsyserveHandler is psychopy_psyserve.MultiPsyserveHandler,
    "strategy_id": handler.strategyId,
    "excel_rows": len(rows),
    "text_rows": len(Path(text).read_text(encoding="utf-8-sig").strip().splitlines()),
}))
