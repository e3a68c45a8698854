"""PsychoPy trial handlers backed by a psyserve server.

`PsyserveHandler` follows PsychoPy's StairHandler protocol (iterate, addResponse, addOtherData, finished,
thisTrialN, intensities/data, saveAsText/Excel/Pickle, ExperimentHandler.addLoop); `MultiPsyserveHandler`
follows MultiStairHandler's (one strategy per condition, interleaved). This module owns the handlers'
local histories and the retrying of asks and tells over a lost connection (asks by request id, tells by
trial id: both idempotent on the server, which is the journal of record).

It must not import PsychoPy at import time (PsychoPy is imported only inside the methods that write its
file formats), and it talks to the server only through psyserve_client.
"""

from __future__ import annotations

import csv
import logging
import os
import pickle
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from psyserve_client import (
    Client,
    DeadlineExceededError,
    FailedPreconditionError,
    NotFoundError,
    Parameter,
    Trial,
    UnavailableError,
)

log = logging.getLogger("psychopy_psyserve")
T = TypeVar("T")
Value = float | int | str | bool
DEFAULT_SERVER = "127.0.0.1:50051"
_RETRYABLE = (UnavailableError, DeadlineExceededError)

# ExperimentHandler instances by id: PsychoPy keeps its handlers' experiments the same way (a weak link,
# so a pickled handler does not drag the experiment along).
_experiments: dict[int, Any] = {}


class ConnectionLostError(ConnectionError):
    """The server could not be reached within `retryTimeout` seconds. Nothing was lost: responses not yet
    acknowledged stay in the handler (`unsent`, also in its pickle) and are sent by the next call."""


def _read_config(config: str | os.PathLike[str]) -> str:
    """INI text from a path or from the text itself (anything with a `[section]` line is text)."""
    text = os.fspath(config)
    if "\n" in text or text.lstrip().startswith("["):
        return text
    path = Path(text)
    if not path.is_file():
        raise FileNotFoundError(f"config: no INI file at {text!r} (pass a path or the INI text)")
    return path.read_text(encoding="utf-8")


class PsyserveHandler:
    """A trial handler whose next stimulus comes from a psyserve strategy.

    Create it from an INI config (a path or the text; a new strategy is configured) or from an existing
    strategy (`strategy=` its id or name; resumed). Iterating yields each trial's parameters as a dict, so
    `ExperimentHandler.addLoop(handler)` writes one column per parameter. `addResponse(outcome)` tells
    the server (with the response time and every `addOtherData` value of that trial as trial metadata)::

        handler = PsyserveHandler("127.0.0.1:50051", config="contrast.ini", strategyName="P01")
        for params in handler:            # {'contrast': 0.12, 'frequency': 4}
            ...show the trial...
            handler.addOtherData("key", key)
            handler.addResponse(correct, rt=rt)
        print(handler.threshold(0.75, frequency=4))

    The server is the journal of record: a lost connection is retried for `retryTimeout` seconds (the ask
    by its request id, the tell by its trial id), so a server restart mid-run loses nothing.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        config: str | os.PathLike[str] | None = None,
        *,
        strategy: int | str | None = None,
        strategyName: str | None = None,
        name: str = "psyserve",
        nTrials: int | None = None,
        fixed: Mapping[str, Value] | None = None,
        metadata: Mapping[str, str] | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        retryTimeout: float = 120.0,
        extraInfo: Mapping[str, Any] | None = None,
        originPath: str | None = None,
        autoLog: bool = True,
    ) -> None:
        if (config is None) == (strategy is None):
            raise ValueError("PsyserveHandler: pass exactly one of config= (INI path or text) and strategy= (id or name)")
        if nTrials is not None and nTrials < 1:
            raise ValueError(f"nTrials must be a positive number of trials, got {nTrials!r}")
        if retryTimeout < 0:
            raise ValueError(f"retryTimeout must be >= 0 seconds, got {retryTimeout!r}")
        self.server = server
        self.name = name
        self.nTrials = nTrials
        self.fixed: dict[str, Value] = dict(fixed or {})
        self.timeout = timeout
        self.retryTimeout = retryTimeout
        self.extraInfo = dict(extraInfo) if extraInfo else None
        self.originPath = originPath
        self.autoLog = autoLog
        self._token = token
        self._client: Client | None = None
        self._exp: int | None = None
        # histories, one entry per trial handed out
        self.thisTrialN = -1
        self.thisTrial: dict[str, Value] | None = None
        self.thisTrialId: int | None = None
        self.intensities: list[dict[str, Value]] = []
        self.data: list[Any] = []
        self.trialIds: list[int] = []
        self.otherData: dict[str, list[Any]] = {}
        self.unsent: list[dict[str, Any]] = []  # tells not yet acknowledged by the server
        self.finished = False
        self._server_finished = False
        self._responded = True  # no trial is waiting for a response
        self._trial_started = 0.0
        self._warned_late: set[str] = set()
        if config is not None:
            text = _read_config(config)
            request_id = uuid.uuid4().hex  # a retried Configure returns the strategy the first one made
            result = self._call(
                lambda c: c.configure(config_str=text, config_name=strategyName, metadata=metadata, request_id=request_id)
            )
            self.strategyId: int = result.strategy_id
            self.strategyName = result.summary.name
            self.parameters: dict[str, Parameter] = {p.name: p for p in result.parameters}
            self.warnings = list(result.warnings)
            for warning in self.warnings:
                log.warning("psyserve config: %s", warning)
            self._server_finished = result.summary.is_finished
        else:
            summary = self._call(
                lambda c: c.resume(config_name=strategy) if isinstance(strategy, str) else c.resume(config_id=strategy)
            )
            self.strategyId = summary.strategy_id
            self.strategyName = summary.name
            self.parameters = {p.name: p for p in summary.parameters}
            self.warnings = []
            self._server_finished = summary.is_finished
        self.finished = self._server_finished

    @classmethod
    def open(
        cls, server: str = DEFAULT_SERVER, config: str | os.PathLike[str] | None = None, strategyName: str | None = None, **kwargs: Any
    ) -> PsyserveHandler:
        """Resume the strategy called `strategyName` if the server has it, else configure `config` under that
        name (what the Builder component does, so a restarted session continues its strategy)."""
        if strategyName:
            try:
                return cls(server, strategy=strategyName, **kwargs)
            except NotFoundError:
                pass
        if config is None:
            raise ValueError(f"config: no INI given and no strategy named {strategyName!r} on {server}")
        return cls(server, config=config, strategyName=strategyName, **kwargs)

    # ------------------------------------------------------------------ connection
    def _connect(self) -> Client:
        if self._client is None:
            token = self._token if self._token is not None else os.environ.get("PSYSERVE_AUTH_TOKEN")
            self._client = Client(self.server, timeout=self.timeout, token=token)
        return self._client

    def _drop_connection(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None

    def _call(self, fn: Callable[[Client], T]) -> T:
        """Run one idempotent RPC, reconnecting and retrying while the server is unreachable."""
        deadline = time.monotonic() + self.retryTimeout
        delay = 0.05
        while True:
            try:
                return fn(self._connect())
            except _RETRYABLE as exc:
                self._drop_connection()
                if time.monotonic() + delay > deadline:
                    raise ConnectionLostError(
                        f"psyserve at {self.server} unreachable for {self.retryTimeout:g} s ({exc.code.name}); "
                        f"{len(self.unsent)} response(s) kept in handler.unsent for the next call"
                    ) from exc
                log.warning("psyserve at %s unreachable (%s); retrying in %.2f s", self.server, exc.code.name, delay)
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

    def close(self) -> None:
        """Send any unsent responses, then close the connection (the strategy stays on the server)."""
        try:
            self.flush()
        finally:
            self._drop_connection()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client"] = None  # a connection cannot be pickled: a loaded handler reconnects by strategy id
        state["_exp"] = None
        state["_token"] = None  # never write a credential into a data file
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def reconnect(self, server: str | None = None, token: str | None = None) -> None:
        """Point a (loaded) handler at a server, checking that its strategy is there."""
        self._drop_connection()
        if server is not None:
            self.server = server
        if token is not None:
            self._token = token
        summary = self._call(lambda c: c.resume(config_id=self.strategyId))
        self._server_finished = summary.is_finished

    # ------------------------------------------------------------------ PsychoPy's handler protocol
    def setExp(self, exp: Any) -> None:
        """Called by ExperimentHandler.addLoop."""
        _experiments[id(exp)] = exp
        self._exp = id(exp)
        self.origin = None

    def getExp(self) -> Any:
        return None if self._exp is None else _experiments.get(self._exp)

    def __iter__(self) -> Iterator[dict[str, Value]]:
        return self

    def __next__(self) -> dict[str, Value]:
        self.flush()
        if not self._responded and self.thisTrialId is not None:
            self._abandon_current("no response before the next trial")
        if self._done():
            self.finished = True
            exp = self.getExp()
            if exp is not None:
                exp.loopEnded(self)
            raise StopIteration
        request_id = uuid.uuid4().hex
        fixed = self.fixed
        ask = self._call(lambda c: c.ask(fixed_pars=fixed or None, strategy_id=self.strategyId, request_id=request_id))
        trial: Trial = ask.trials[0]
        self._server_finished = ask.is_finished
        self.thisTrialN += 1
        for values in self.otherData.values():  # keep otherData aligned with trials
            while len(values) < self.thisTrialN:
                values.append(None)
        self.thisTrial = dict(trial.params)
        self.thisTrialId = trial.trial_id
        self.intensities.append(dict(trial.params))
        self.trialIds.append(trial.trial_id)
        self.data.append(None)
        self._responded = False
        self._trial_started = time.monotonic()
        exp = self.getExp()
        if exp is not None:
            exp.addData(self.name + ".trialId", trial.trial_id)
        return dict(trial.params)

    next = __next__

    def _done(self) -> bool:
        if self.nTrials is not None and self.thisTrialN + 1 >= self.nTrials:
            return True
        return self._server_finished

    @property
    def intensity(self) -> dict[str, Value] | None:
        """The current trial's parameters (StairHandler's name for the current level)."""
        return self.thisTrial

    @property
    def thisN(self) -> int:
        return self.thisTrialN

    def addResponse(self, result: Any, rt: float | None = None, **metadata: Any) -> None:
        """Record the current trial's outcome and tell the server.

        `rt` (seconds) goes into the trial's metadata; without it the time since the trial was handed out
        is sent. Every `addOtherData` value of this trial and any extra keyword arguments go along too.
        """
        if self.thisTrialId is None:
            raise RuntimeError("addResponse() before the first trial: iterate the handler first")
        if self._responded:
            raise RuntimeError(f"addResponse(): trial {self.thisTrialN} (id {self.thisTrialId}) already has a response")
        outcome = _outcome_value(result)
        elapsed = time.monotonic() - self._trial_started
        extra: dict[str, Any] = {k: v[self.thisTrialN] for k, v in self.otherData.items() if len(v) > self.thisTrialN}
        extra = {k: v for k, v in extra.items() if v is not None}
        extra.update(metadata)
        extra["rt"] = rt if rt is not None else round(elapsed, 6)
        self.data[self.thisTrialN] = result
        self._responded = True
        self.unsent.append({"trial_id": self.thisTrialId, "outcome": outcome, "metadata": {k: str(v) for k, v in extra.items()}})
        exp = self.getExp()
        if exp is not None:
            exp.addData(self.name + ".response", result)
            if rt is not None:
                exp.addData(self.name + ".rt", rt)
        self.flush()

    def addData(self, result: Any, rt: float | None = None, **metadata: Any) -> None:
        """StairHandler's deprecated name for addResponse."""
        self.addResponse(result, rt=rt, **metadata)

    def addOtherData(self, dataName: str, value: Any) -> None:
        """Keep a value alongside this trial; it reaches the server as trial metadata when the response is
        told, so call it before addResponse (later values stay in the handler's and PsychoPy's files only)."""
        values = self.otherData.setdefault(dataName, [])
        while len(values) < self.thisTrialN:
            values.append(None)
        if len(values) > self.thisTrialN >= 0:
            values[self.thisTrialN] = value
        else:
            values.append(value)
        if self._responded and self.thisTrialId is not None and dataName not in self._warned_late:
            self._warned_late.add(dataName)
            log.warning(
                "addOtherData(%r) after addResponse: kept in the handler and PsychoPy's data, not in the server's "
                "trial metadata (call addOtherData before addResponse)",
                dataName,
            )
        exp = self.getExp()
        if exp is not None:
            exp.addData(dataName, value)

    def flush(self) -> None:
        """Tell the server every response it has not acknowledged yet (retrying; idempotent by trial id)."""
        while self.unsent:
            item = self.unsent[0]
            result = self._call(
                lambda c, item=item: c.tell(  # type: ignore[misc]
                    outcome=item["outcome"], trial_id=item["trial_id"], strategy_id=self.strategyId, **item["metadata"]
                )
            )
            self.unsent.pop(0)
            self._server_finished = result.is_finished
        self.finished = self._done() and self._responded

    def _abandon_current(self, reason: str) -> None:
        trial_id = self.thisTrialId
        assert trial_id is not None
        log.warning("trial %s (id %s) had no response: abandoned on the server (%s)", self.thisTrialN, trial_id, reason)
        try:
            self._call(lambda c: c.abandon_trial(trial_id, reason=reason, strategy_id=self.strategyId))
        except FailedPreconditionError:  # a retried abandon after the first one landed, or a lease that expired
            pass
        self._responded = True

    # ------------------------------------------------------------------ model read-outs
    def threshold(self, target: float = 0.75, **fixed: Value) -> dict[str, Value]:
        """The stimulus at which the model's response probability is `target` (the other parameters held
        at `fixed`), as {parameter: value}."""
        self.flush()
        constraints: dict[str | int, Value] = {name: value for name, value in fixed.items()}
        result = self._call(
            lambda c: c.query("inverse", probability_space=True, y=target, constraints=constraints, strategy_id=self.strategyId)
        )
        return dict(result.predictions[0].x)

    def predict(
        self, points: Sequence[Mapping[str, Value]] | None = None, probability: bool = True, **params: Value
    ) -> float | list[float]:
        """The model's response probability (or latent mean with probability=False) at one stimulus given as
        keyword arguments, or at a list of stimuli (then a list)."""
        self.flush()
        many = points is not None
        x = [dict(p) for p in points] if points is not None else [dict(params)]
        result = self._call(
            lambda c: c.query("prediction", probability_space=probability, x=x, strategy_id=self.strategyId)
        )
        values = [p.probability if probability else p.mean for p in result.predictions]
        return values if many else values[0]

    def journal(self) -> list[Trial]:
        """The server's record of this strategy's trials (ListTrials)."""
        return self._call(lambda c: c.list_trials(strategy_id=self.strategyId))

    # ------------------------------------------------------------------ files
    def _rows(self) -> tuple[list[str], list[list[Any]]]:
        names: list[str] = []
        for params in self.intensities:
            names += [n for n in params if n not in names]
        other = list(self.otherData)
        header = ["trialN", "trialId", *names, "response", *other]
        rows = []
        for i, params in enumerate(self.intensities):
            row = [i, self.trialIds[i], *(params.get(n) for n in names), self.data[i]]
            row += [self.otherData[k][i] if i < len(self.otherData[k]) else None for k in other]
            rows.append(row)
        return header, rows

    def saveAsText(
        self,
        fileName: str,
        delim: str | None = None,
        matrixOnly: bool = False,
        fileCollisionMethod: str = "rename",
        encoding: str = "utf-8-sig",
    ) -> str | None:
        """One row per trial (trial number, server trial id, parameters, response, other data). `.tsv` is
        added without an extension; the delimiter follows the extension (tab unless .csv)."""
        if self.thisTrialN < 0:
            log.info("saveAsText(): no trials yet, nothing saved")
            return None
        if not os.path.splitext(fileName)[1]:
            fileName += ".tsv"
        if delim is None:
            delim = "," if fileName.endswith(".csv") else "\t"
        header, rows = self._rows()
        with _open_output(fileName, fileCollisionMethod, encoding) as f:
            writer = csv.writer(f, delimiter=delim, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
            if not matrixOnly and self.extraInfo:
                writer.writerow([])
                for key, value in self.extraInfo.items():
                    writer.writerow([key, value])
            return str(f.name)

    def saveAsExcel(
        self, fileName: str, sheetName: str = "data", matrixOnly: bool = False, appendFile: bool = True, fileCollisionMethod: str = "rename"
    ) -> str | None:
        """The same table as saveAsText in an .xlsx sheet (openpyxl, which PsychoPy installs)."""
        if self.thisTrialN < 0:
            log.info("saveAsExcel(): no trials yet, nothing saved")
            return None
        import openpyxl

        if not fileName.endswith(".xlsx"):
            fileName += ".xlsx"
        if appendFile and os.path.isfile(fileName):
            book = openpyxl.load_workbook(fileName)
            if sheetName in book.sheetnames:
                del book[sheetName]
            sheet = book.create_sheet(sheetName)
        else:
            book = openpyxl.Workbook()
            sheet = book.active
            sheet.title = sheetName
        header, rows = self._rows()
        sheet.append(header)
        for row in rows:
            sheet.append([v if isinstance(v, (int, float, str, bool)) or v is None else str(v) for v in row])
        if not matrixOnly and self.extraInfo:
            sheet.append([])
            for key, value in self.extraInfo.items():
                sheet.append([str(key), str(value)])
        book.save(fileName)
        return fileName

    def saveAsPickle(self, fileName: str, fileCollisionMethod: str = "rename") -> str | None:
        """Pickle the handler (`.psydat`); the connection is dropped and reopened by strategy id when the
        loaded handler next talks to the server (psychopy.misc.fromFile or pickle.load)."""
        if self.thisTrialN < 0:
            log.info("saveAsPickle(): no trials yet, nothing saved")
            return None
        if not fileName.endswith(".psydat"):
            fileName += ".psydat"
        with _open_output(fileName, fileCollisionMethod, None, binary=True) as f:
            pickle.dump(self, f)
            return str(f.name)

    def __repr__(self) -> str:
        return f"<PsyserveHandler {self.name!r} strategy {self.strategyId} on {self.server}, trial {self.thisTrialN}>"


def _outcome_value(result: Any) -> float | Mapping[str, float]:
    if isinstance(result, Mapping):
        return {str(k): float(v) for k, v in result.items()}
    if isinstance(result, str):
        raise TypeError(f"addResponse(): the outcome must be a number (1/0, True/False), got the string {result!r}")
    try:
        return float(result)
    except (TypeError, ValueError):
        raise TypeError(f"addResponse(): the outcome must be a number (1/0, True/False), got {result!r}") from None


def _open_output(fileName: str, fileCollisionMethod: str, encoding: str | None, binary: bool = False) -> Any:
    """PsychoPy's openOutputFile (collision handling) when PsychoPy is installed, else a plain open."""
    try:
        from psychopy.tools.filetools import openOutputFile
    except ImportError:
        return open(fileName, "wb") if binary else open(fileName, "w", encoding=encoding, newline="")
    if binary:
        return openOutputFile(fileName, append=False, fileCollisionMethod=fileCollisionMethod, encoding=None)
    return openOutputFile(fileName, append=False, fileCollisionMethod=fileCollisionMethod, encoding=encoding)


class MultiPsyserveHandler:
    """Several strategies interleaved, one per condition (MultiStairHandler's protocol).

    `conditions` is a list of dicts, each with a `label` and either `config` (INI path or text) or
    `strategy` (existing id or name); optional `strategyName`, `fixed` and `nTrials` per condition.
    Iterating yields `(parameters, condition)`; `addResponse` goes to the current condition's strategy.
    `method` is 'random' (each pass shuffled) or 'sequential'.
    """

    def __init__(
        self,
        server: str = DEFAULT_SERVER,
        conditions: Sequence[Mapping[str, Any]] = (),
        method: str = "random",
        nTrials: int | None = None,
        name: str = "psyserve",
        randomSeed: int | None = None,
        token: str | None = None,
        timeout: float = 60.0,
        retryTimeout: float = 120.0,
        extraInfo: Mapping[str, Any] | None = None,
        originPath: str | None = None,
        autoLog: bool = True,
    ) -> None:
        if method not in ("random", "sequential"):
            raise ValueError(f"method must be 'random' or 'sequential', got {method!r}")
        if not conditions:
            raise ValueError("conditions: give at least one condition (a dict with 'label' and 'config' or 'strategy')")
        labels: list[str] = []
        for i, cond in enumerate(conditions):
            if not isinstance(cond, Mapping):
                raise TypeError(f"conditions[{i}] must be a dict, got {type(cond).__name__}")
            if "label" not in cond:
                raise ValueError(f"conditions[{i}]: missing 'label'")
            if ("config" in cond) == ("strategy" in cond):
                raise ValueError(f"conditions[{i}] ({cond['label']!r}): give exactly one of 'config' and 'strategy'")
            unknown = set(cond) - {"label", "config", "strategy", "strategyName", "fixed", "nTrials", "metadata"}
            if unknown:
                raise ValueError(f"conditions[{i}] ({cond['label']!r}): unknown key(s) {sorted(unknown)}")
            if cond["label"] in labels:
                raise ValueError(f"conditions[{i}]: label {cond['label']!r} is used twice")
            labels.append(cond["label"])
        self.server = server
        self.name = name
        self.method = method
        self.conditions = [dict(c) for c in conditions]
        self.extraInfo = dict(extraInfo) if extraInfo else None
        self.originPath = originPath
        self.autoLog = autoLog
        self._rng = random.Random(randomSeed)
        self._exp: int | None = None
        self.handlers: list[PsyserveHandler] = []
        for cond in self.conditions:
            self.handlers.append(
                PsyserveHandler(
                    server,
                    config=cond.get("config"),
                    strategy=cond.get("strategy"),
                    strategyName=cond.get("strategyName"),
                    name=f"{name}.{cond['label']}",
                    nTrials=cond.get("nTrials", nTrials),
                    fixed=cond.get("fixed"),
                    metadata=cond.get("metadata"),
                    token=token,
                    timeout=timeout,
                    retryTimeout=retryTimeout,
                    autoLog=autoLog,
                )
            )
        self.running = list(range(len(self.handlers)))
        self._pass: list[int] = []
        self.currentIndex: int | None = None
        self.thisTrialN = -1
        self.thisTrial: dict[str, Value] | None = None
        self.finished = False

    @property
    def currentHandler(self) -> PsyserveHandler | None:
        return None if self.currentIndex is None else self.handlers[self.currentIndex]

    @property
    def currentCondition(self) -> dict[str, Any] | None:
        return None if self.currentIndex is None else self.conditions[self.currentIndex]

    def setExp(self, exp: Any) -> None:
        _experiments[id(exp)] = exp
        self._exp = id(exp)
        self.origin = None

    def getExp(self) -> Any:
        return None if self._exp is None else _experiments.get(self._exp)

    def __iter__(self) -> Iterator[tuple[dict[str, Value], dict[str, Any]]]:
        return self

    def __next__(self) -> tuple[dict[str, Value], dict[str, Any]]:
        while True:
            if not self._pass:
                if not self.running:
                    self.finished = True
                    self.thisTrial = None
                    exp = self.getExp()
                    if exp is not None:
                        exp.loopEnded(self)
                    raise StopIteration
                self._pass = list(self.running)
                if self.method == "random":
                    self._rng.shuffle(self._pass)
            index = self._pass.pop(0)
            try:
                params = next(self.handlers[index])
            except StopIteration:
                self.running.remove(index)
                continue
            break
        self.currentIndex = index
        self.thisTrialN += 1
        self.thisTrial = params
        exp = self.getExp()
        if exp is not None:
            handler = self.handlers[index]
            exp.addData(self.name + ".label", self.conditions[index]["label"])
            exp.addData(self.name + ".strategyId", handler.strategyId)
            exp.addData(self.name + ".trialId", handler.thisTrialId)
            exp.addData(self.name + ".thisRepN", handler.thisTrialN)
        return params, self.conditions[index]

    next = __next__

    def _current(self) -> PsyserveHandler:
        handler = self.currentHandler
        if handler is None:
            raise RuntimeError("no current trial: iterate the handler first")
        return handler

    def addResponse(self, result: Any, rt: float | None = None, **metadata: Any) -> None:
        self._current().addResponse(result, rt=rt, **metadata)
        exp = self.getExp()
        if exp is not None:
            exp.addData(self.name + ".response", result)
            if rt is not None:
                exp.addData(self.name + ".rt", rt)

    def addOtherData(self, dataName: str, value: Any) -> None:
        self._current().addOtherData(dataName, value)
        exp = self.getExp()
        if exp is not None:
            exp.addData(dataName, value)

    def flush(self) -> None:
        for handler in self.handlers:
            handler.flush()

    def close(self) -> None:
        for handler in self.handlers:
            handler.close()

    def threshold(self, target: float = 0.75, label: str | None = None, **fixed: Value) -> dict[str, Value]:
        """threshold() of one condition (by label; the current one without)."""
        return self._by_label(label).threshold(target, **fixed)

    def predict(
        self, points: Sequence[Mapping[str, Value]] | None = None, probability: bool = True, label: str | None = None, **params: Value
    ) -> float | list[float]:
        """predict() of one condition (by label; the current one without)."""
        return self._by_label(label).predict(points, probability, **params)

    def _by_label(self, label: str | None) -> PsyserveHandler:
        if label is None:
            return self._current()
        for cond, handler in zip(self.conditions, self.handlers):
            if cond["label"] == label:
                return handler
        raise KeyError(f"no condition labelled {label!r} (labels: {[c['label'] for c in self.conditions]})")

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_exp"] = None
        return state

    def saveAsText(self, fileName: str, delim: str | None = None, matrixOnly: bool = False, fileCollisionMethod: str = "rename", encoding: str = "utf-8-sig") -> list[str]:
        """One file per condition: `<fileName>_<label>.tsv` (as MultiStairHandler writes one per staircase)."""
        stem, ext = os.path.splitext(fileName)
        out = []
        for cond, handler in zip(self.conditions, self.handlers):
            written = handler.saveAsText(f"{stem}_{cond['label']}{ext}", delim, matrixOnly, fileCollisionMethod, encoding)
            if written:
                out.append(written)
        return out

    def saveAsExcel(self, fileName: str, matrixOnly: bool = False, appendFile: bool = False, fileCollisionMethod: str = "rename") -> str | None:
        """One workbook, one sheet per condition."""
        written = None
        for i, (cond, handler) in enumerate(zip(self.conditions, self.handlers)):
            written = handler.saveAsExcel(fileName, str(cond["label"]), matrixOnly, appendFile or i > 0, fileCollisionMethod) or written
        return written

    def saveAsPickle(self, fileName: str, fileCollisionMethod: str = "rename") -> str | None:
        if self.thisTrialN < 0:
            return None
        if not fileName.endswith(".psydat"):
            fileName += ".psydat"
        with _open_output(fileName, fileCollisionMethod, None, binary=True) as f:
            pickle.dump(self, f)
            return str(f.name)
