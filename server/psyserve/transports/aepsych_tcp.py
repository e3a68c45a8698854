"""AEPsych JSON/TCP transport: frames AEPsych clients' byte stream into requests, translates each to
ExperimentService calls and answers in AEPsych's reply shapes.

Owns framing, reply shapes and each connection's current strategy; holds no experiment logic
(strategies, trials, validation and storage belong to the service).

Longer than ~500 lines on purpose: it is one wire format (AEPsych's), whose framing, request
readers and reply shapes are read together when its behaviour is checked against AEPsych's.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import FailedPrecondition, InvalidArgument, ServiceError
from ..params import OutcomeValue, RawValue
from ..service import ExperimentService, InfoView, TellItem

log = logging.getLogger(__name__)

DEFAULT_REQUEST_TIMEOUT = 60.0  # seconds a started request may take to arrive in full
DEFAULT_MAX_REQUEST_BYTES = 1 << 20  # an incomplete request longer than this (in characters) closes the connection
DEFAULT_CLOSE_TIMEOUT = 10.0  # seconds close() waits for requests in flight
READ_CHUNK = 64 * 1024
ECHO_LIMIT = 4000  # error replies echo the request only while they stay under the client's recv(4096)
SNIPPET = 200  # characters of unparseable input echoed back
MAX_TRIALS_PER_TELL = 1000

JSON = dict[str, Any]


# ---------------------------------------------------------------------- framing
@dataclass(frozen=True)
class Frame:
    """One unit of the input stream: a request object, or unparseable input (`error` set)."""

    request: JSON | None = None
    error: str = ""
    text: str = ""


_WHITESPACE = " \t\r\n\ufeff"
_LITERALS = ("true", "false", "null", "NaN", "Infinity", "-Infinity")
_UNFINISHED_NUMBER = re.compile(r"-|[.eE][-+]?|[eE][-+]?")
_UNFINISHED_ESCAPE = re.compile(r"\\?u[0-9a-fA-F]{0,4}")  # the scanner points at the "u"


def _is_unfinished(buffer: str, error: json.JSONDecodeError) -> bool:
    """Whether a JSON text that failed to parse at `error.pos` is a prefix of some valid text (more
    bytes may complete it), rather than invalid whatever follows."""
    tail = buffer[error.pos :]
    if error.pos >= len(buffer) or error.msg.startswith("Unterminated string"):
        return True
    if error.msg.startswith("Invalid \\uXXXX escape"):
        return _UNFINISHED_ESCAPE.fullmatch(tail) is not None
    if error.msg == "Expecting value":
        return any(lit.startswith(tail) and lit != tail for lit in _LITERALS) or _UNFINISHED_NUMBER.fullmatch(tail) is not None
    if error.msg.startswith("Expecting ',' delimiter"):  # a number cut after its integer part
        return _UNFINISHED_NUMBER.fullmatch(tail) is not None
    return False


class RequestFramer:
    """Splits a byte stream into JSON objects sent with no delimiter: an object split over packets
    waits for its rest, several in one packet come out in order, whitespace between them (MATLAB's
    newline) is skipped, and input that can never become valid JSON comes out as one error frame
    per received chunk, after which the stream resynchronises on the next `{`."""

    def __init__(self, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.max_request_bytes = max_request_bytes
        self.buffer = ""
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        self._decoder = json.JSONDecoder()
        self._parsed_length = 0  # buffer length at the last unfinished parse
        self.overflow = ""  # set when the unfinished request outgrew max_request_bytes

    @property
    def pending(self) -> bool:
        """Whether part of a request has arrived and the rest is awaited."""
        return bool(self.buffer)

    def feed(self, data: bytes) -> list[Frame]:
        new = self._utf8.decode(data)
        self.buffer += new
        frames: list[Frame] = []
        reported = False  # one error frame per chunk of garbage
        # An unfinished object can only complete with a "}"; reparse otherwise only when the
        # buffer has doubled, so dribbled bytes cost linear time.
        if self._parsed_length and "}" not in new and len(self.buffer) < 2 * self._parsed_length:
            return self._check_size(frames)
        while self.buffer:
            start = len(self.buffer) - len(self.buffer.lstrip(_WHITESPACE))
            if start == len(self.buffer):
                self.buffer = ""
                break
            if self.buffer[start] != "{":
                brace = self.buffer.find("{", start)
                junk = self.buffer[start:] if brace < 0 else self.buffer[start:brace]
                self.buffer = "" if brace < 0 else self.buffer[brace:]
                if not reported:
                    frames.append(Frame(error="request is not a JSON object", text=junk[:SNIPPET]))
                    reported = True
                continue
            try:
                request, end = self._decoder.raw_decode(self.buffer, start)
            except json.JSONDecodeError as exc:
                if _is_unfinished(self.buffer, exc):
                    self.buffer = self.buffer[start:]
                    self._parsed_length = len(self.buffer)
                    break
                error, position = f"request is not valid JSON: {exc.msg} at character {exc.pos - start}", exc.pos
            except RecursionError:  # where a nesting bomb ends is unknowable: drop what arrived
                error, position = "request is not valid JSON: nested too deeply", len(self.buffer)
            else:
                self.buffer = self.buffer[end:]
                self._parsed_length = 0
                frames.append(Frame(request=request))
                reported = False
                continue
            brace = self.buffer.find("{", max(position, start + 1))
            text = self.buffer[start:] if brace < 0 else self.buffer[start:brace]
            self.buffer = "" if brace < 0 else self.buffer[brace:]
            self._parsed_length = 0
            if not reported:
                frames.append(Frame(error=error, text=text[:SNIPPET]))
                reported = True
        return self._check_size(frames)

    def _check_size(self, frames: list[Frame]) -> list[Frame]:
        if len(self.buffer) > self.max_request_bytes:
            self.overflow = f"request larger than {self.max_request_bytes} bytes"
        return frames


# ---------------------------------------------------------------------- request fields
def _fields(message: Any, kind: str) -> JSON:
    """The request's `message` as an object ("" and null stand for {})."""
    if message is None or message == "":
        return {}
    if not isinstance(message, dict):
        raise InvalidArgument(f"message: {kind} expects a JSON object, got {type(message).__name__}", "message")
    return message


def _integer(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InvalidArgument(f"{name}: expected an integer, got {value!r}", name)
    return int(value)


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidArgument(f"{name}: expected true or false, got {value!r}", name)


def _single(value: Any, name: str) -> Any:
    """A scalar, or the element of a one-element list (AEPsych clients send both)."""
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidArgument(f"{name}: expected one value, got {len(value)}", name)
        return value[0]
    return value


def _wire(value: RawValue) -> RawValue:
    """A raw parameter value as AEPsych sends it: binary as 0/1, everything else unchanged."""
    return int(value) if isinstance(value, bool) else value


def _columns(values: Mapping[str, Any], name: str) -> tuple[dict[str, list[Any]], int]:
    """{parameter: scalar or list} -> ({parameter: list}, number of rows); scalars broadcast."""
    if not isinstance(values, dict) or not values:
        raise InvalidArgument(f"{name}: expected an object of parameter values", name)
    lengths = {len(v) for v in values.values() if isinstance(v, list)}
    if len(lengths) > 1:
        raise InvalidArgument(f"{name}: every parameter needs the same number of values, got {sorted(lengths)}", name)
    rows = lengths.pop() if lengths else 1
    if rows == 0:
        raise InvalidArgument(f"{name}: empty value lists", name)
    return {str(k): (v if isinstance(v, list) else [v] * rows) for k, v in values.items()}, rows


def config_to_stimuli(config: Any, stimuli_per_trial: int) -> list[list[dict[str, Any]]]:
    """A tell's config -> trials, each a list of `stimuli_per_trial` stimuli.

    One stimulus per trial: `{x: v}` is one trial, `{x: [v1, v2]}` two. Pairs: `{x: [[a, b]]}`
    is one trial (the shape ask answers with), `{x: [a, b]}` one trial too, `{x: [[a, b], [c, d]]}` two.
    """
    if stimuli_per_trial == 2 and isinstance(config, dict):
        nested = {k: v for k, v in config.items() if isinstance(v, list) and v and all(isinstance(e, list) for e in v)}
        if not nested:  # one trial given as flat pairs
            config = {k: [v] for k, v in config.items()}
    columns, rows = _columns(config, "config")
    if rows > MAX_TRIALS_PER_TELL:
        raise InvalidArgument(f"config: at most {MAX_TRIALS_PER_TELL} trials per tell, got {rows}", "config")
    trials: list[list[dict[str, Any]]] = []
    for i in range(rows):
        stimuli: list[dict[str, Any]] = [{} for _ in range(stimuli_per_trial)]
        for name, values in columns.items():
            value = values[i]
            if stimuli_per_trial == 1:
                if isinstance(value, (list, dict)):
                    raise InvalidArgument(f"config.{name}: expected one value per trial, got {value!r}", f"config.{name}")
                stimuli[0][name] = value
            else:
                if not isinstance(value, list) or len(value) != stimuli_per_trial:
                    raise InvalidArgument(
                        f"config.{name}: expected a pair of values per trial (stimuli_per_trial = 2), got {value!r}",
                        f"config.{name}",
                    )
                for stimulus, element in zip(stimuli, value):
                    stimulus[name] = element
        trials.append(stimuli)
    return trials


def _pairwise_from_wire(outcome: OutcomeValue) -> OutcomeValue:
    """AEPsych's pairwise outcome (1 = the SECOND stimulus preferred, as aepsych's PairwiseProbitModel
    reads it) -> psyserve's (1 = the first preferred); anything but 0/1 is refused."""
    value: Any = outcome.value
    if isinstance(value, str) or value not in (0, 1):
        raise InvalidArgument(
            f"outcome: a pairwise trial's outcome is 0 (first stimulus preferred) or 1 (second), got {value!r}",
            "outcome",
        )
    return dataclasses.replace(outcome, value=1.0 - outcome.value)


def outcomes_per_trial(outcome: Any, outcome_names: tuple[str, ...], trials: int) -> list[list[OutcomeValue]]:
    """A tell's outcome (scalar, list, or {outcome name: scalar or list}) -> outcomes of each trial."""
    if outcome is None:
        raise InvalidArgument("outcome: missing", "outcome")
    if isinstance(outcome, dict):
        columns: dict[str, list[Any]] = {}
        for name, value in outcome.items():
            values = value if isinstance(value, list) else [value]
            if len(values) != trials:
                raise InvalidArgument(f"outcome.{name}: expected {trials} value(s), got {len(values)}", f"outcome.{name}")
            columns[str(name)] = values
        return [[OutcomeValue(name, values[i]) for name, values in columns.items()] for i in range(trials)]
    values = outcome if isinstance(outcome, list) else [outcome]
    if trials == 1 and len(values) == len(outcome_names) > 1:  # one trial, outcomes in config order
        return [[OutcomeValue("", v) for v in values]]
    if len(values) != trials:
        raise InvalidArgument(f"outcome: expected {trials} value(s), one per trial in config, got {len(values)}", "outcome")
    return [[OutcomeValue("", v)] for v in values]


def _ini_value(value: Any, where: str, nested: bool = False) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if "\n" in value and not nested:
            return value.replace("\n", "\n    ")  # configparser continuation lines
        return repr(value) if nested else value
    if isinstance(value, list):
        inner = nested or any(isinstance(v, list) for v in value)  # manual points: Python literals
        return "[" + ", ".join(_ini_value(v, where, inner) for v in value) + "]"
    raise InvalidArgument(f"{where}: expected a string, number, boolean or list, got {type(value).__name__}", where)


def render_ini(config_dict: Any) -> str:
    """AEPsych's `config_dict` ({section: {key: value}}) -> INI text; lists render as `[a, b]`."""
    if not isinstance(config_dict, dict) or not config_dict:
        raise InvalidArgument("config_dict: expected an object of sections", "config_dict")
    lines: list[str] = []
    for section, entries in config_dict.items():
        where = f"config_dict[{section}]"
        if not isinstance(entries, dict):
            raise InvalidArgument(f"{where}: expected an object of keys", where)
        if not section or any(c in section for c in "[]\r\n"):
            raise InvalidArgument(f"{where}: invalid section name", where)
        lines.append(f"[{section}]")
        for key, value in entries.items():
            if not key or key != key.strip() or any(c in key for c in "=:[]\r\n") or key[0] in "#;":
                raise InvalidArgument(f"{where}: invalid key {key!r}", where)
            lines.append(f"{key} = {_ini_value(value, f'{where}.{key}')}")
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------- replies
def encode(reply: JSON) -> bytes:
    return json.dumps(reply).encode("ascii")  # ASCII is UTF-8, and what Unity's reader expects


def error_reply(text: str, message: Any) -> bytes:
    """AEPsych's error shape; the request is echoed unless that would outgrow one recv(4096)."""
    reply = encode({"server_error": text[:2000], "message": message})
    if len(reply) > ECHO_LIMIT:
        kind = message.get("type") if isinstance(message, dict) else None
        reply = encode({"server_error": text[:2000], "message": {"type": kind, "truncated": True}})
    return reply


def info_reply(info: InfoView) -> JSON:
    reply: JSON = dataclasses.asdict(info)
    strategy_id = reply.pop("strategy_id")
    return {"exp_id": strategy_id, "strat_id": strategy_id, **reply}


# ---------------------------------------------------------------------- connections
@dataclass(eq=False)
class _Connection:
    peer: str
    strategy_id: int | None = None
    reading: bool = False
    task: asyncio.Task[None] | None = None


Handler = Callable[[_Connection, JSON, JSON], Awaitable[JSON]]


class AEPsychServer:
    """Serves AEPsych's protocol on one TCP port, any number of connections at once, each with its
    own current strategy."""

    def __init__(
        self,
        service: ExperimentService,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
    ) -> None:
        self.service = service
        self.request_timeout = request_timeout
        self.max_request_bytes = max_request_bytes
        self.close_timeout = close_timeout
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._closing = False
        self._handlers: dict[str, Handler] = {
            "setup": self._setup,
            "ask": self._ask,
            "tell": self._tell,
            "query": self._query,
            "parameters": self._parameters,
            "info": self._info,
            "get_config": self._get_config,
            "finish_strategy": self._finish_strategy,
            "resume": self._resume,
            "can_model": self._can_model,
        }

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, host, port)

    async def close(self) -> None:
        """Stop accepting, end idle connections, let requests in flight answer, then close them."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        tasks = [c.task for c in self._connections if c.task is not None]
        for conn in list(self._connections):
            if conn.reading and conn.task is not None:
                conn.task.cancel()
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self.close_timeout)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        peer = writer.get_extra_info("peername")
        conn = _Connection(peer=f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer))
        conn.task = asyncio.create_task(self._serve(conn, reader, writer), name=f"aepsych {conn.peer}")
        self._connections.add(conn)
        conn.task.add_done_callback(lambda _: self._connections.discard(conn))

    async def _serve(self, conn: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        log.debug("AEPsych connection from %s", conn.peer)
        loop = asyncio.get_running_loop()
        framer = RequestFramer(self.max_request_bytes)
        started: float | None = None  # when the request now arriving began to arrive
        try:
            while not self._closing:
                timeout = None
                if not framer.pending:
                    started = None
                else:
                    started = loop.time() if started is None else started
                    timeout = started + self.request_timeout - loop.time()
                conn.reading = True
                try:
                    data = await asyncio.wait_for(reader.read(READ_CHUNK), timeout)
                except TimeoutError:
                    log.info("AEPsych connection %s closed: request incomplete after %g s", conn.peer, self.request_timeout)
                    return
                finally:
                    conn.reading = False
                if not data:
                    return
                frames = framer.feed(data)
                if frames:
                    started = None
                for frame in frames:
                    reply, keep_open = await self._answer(conn, frame)
                    writer.write(reply)
                    await writer.drain()
                    if not keep_open or self._closing:
                        return
                if framer.overflow:
                    log.info("AEPsych connection %s closed: %s", conn.peer, framer.overflow)
                    writer.write(error_reply(framer.overflow, framer.buffer[:SNIPPET]))
                    await writer.drain()
                    return
        except (ConnectionError, OSError) as exc:
            log.debug("AEPsych connection %s lost: %s", conn.peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            log.debug("AEPsych connection from %s closed", conn.peer)

    async def _answer(self, conn: _Connection, frame: Frame) -> tuple[bytes, bool]:
        """One reply for one frame, and whether the connection stays open."""
        if frame.request is None:
            return error_reply(frame.error, frame.text), True
        request = frame.request
        kind = request.get("type")
        try:
            if kind == "exit":
                return encode({"termination_type": "Terminate", "success": True}), False
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                known = sorted([*self._handlers, "exit"])
                raise InvalidArgument(f"type: unknown request type {kind!r} (known: {known})", "type")
            extra_info = request.get("extra_info")
            if extra_info is not None and not isinstance(extra_info, dict):
                raise InvalidArgument("extra_info: expected a JSON object", "extra_info")
            reply = await handler(conn, _fields(request.get("message"), str(kind)), extra_info or {})
            return encode(reply), True
        except ServiceError as exc:
            log.debug("AEPsych %s from %s refused: %s", kind, conn.peer, exc.message)
            return error_reply(exc.message, request), True
        except Exception as exc:
            log.exception("AEPsych %s from %s failed", kind, conn.peer)
            return error_reply(f"internal error: {type(exc).__name__}: {exc}", request), True

    # ------------------------------------------------------------------ requests
    def _current(self, conn: _Connection) -> int:
        if conn.strategy_id is None:
            raise FailedPrecondition("no current strategy on this connection: send setup or resume first", "strat_id")
        return conn.strategy_id

    async def _setup(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        config_str, config_dict = message.get("config_str"), message.get("config_dict")
        if (config_str is None) == (config_dict is None):
            raise InvalidArgument("message: setup needs exactly one of config_str and config_dict", "config_str")
        if config_str is not None and not isinstance(config_str, str):
            raise InvalidArgument("config_str: expected a string of INI text", "config_str")
        name = message.get("name") or ""  # psyserve extension: a name to resume by
        if not isinstance(name, str):
            raise InvalidArgument("name: expected a string", "name")
        config_ini = config_str if config_str is not None else render_ini(config_dict)
        result = await self.service.configure(config_ini, name=name, allow_sweep=False)
        conn.strategy_id = result.strategy.strategy_id
        for warning in result.warnings:
            log.info("strategy %d: %s", conn.strategy_id, warning)
        reply: JSON = {"strat_id": conn.strategy_id}
        if result.warnings:  # bounded, so the reply fits one recv(4096)
            reply["warnings"] = [w[:200] for w in result.warnings[:10]]
        return reply

    async def _resume(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise InvalidArgument("name: expected a string", "name")
            view = self.service.resume(name=name)
        else:
            if message.get("strat_id") is None:
                raise InvalidArgument("strat_id: resume needs a strategy id", "strat_id")
            view = self.service.resume(strategy_id=_integer(message["strat_id"], "strat_id"))
        if view.sweep is not None:
            raise FailedPrecondition("strat_id: a parameter sweep is served over the gRPC API only (trials are told by trial id)", "strat_id")
        conn.strategy_id = view.strategy_id
        return {"strat_id": view.strategy_id}

    async def _ask(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        strategy_id = self._current(conn)
        num_points = _integer(message.get("num_points") or 1, "num_points")
        fixed = message.get("fixed_pars") or {}
        if not isinstance(fixed, dict):
            raise InvalidArgument("fixed_pars: expected an object of parameter values", "fixed_pars")
        fixed = {name: _single(value, f"fixed_pars.{name}") for name, value in fixed.items()}
        result = await self.service.ask(strategy_id, num_points, fixed)
        shape = self.service.parameters(strategy_id)
        names, pairs = shape.names, shape.stimuli_per_trial > 1
        config = {
            name: [[_wire(s[name]) for s in t.stimuli] if pairs else _wire(t.stimuli[0][name]) for t in result.trials]
            for name in names
        }
        return {"config": config, "is_finished": result.is_finished, "num_points": len(result.trials)}

    async def _tell(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        strategy_id = self._current(conn)
        shape = self.service.parameters(strategy_id)
        trials = config_to_stimuli(message.get("config"), shape.stimuli_per_trial)
        outcomes = outcomes_per_trial(message.get("outcome"), shape.outcome_names, len(trials))
        if shape.stimuli_per_trial == 2:
            outcomes = [[_pairwise_from_wire(o) for o in trial] for trial in outcomes]
        model_data = _flag(message.get("model_data", True), "model_data")
        extras = {**extra_info, **{k: v for k, v in message.items() if k not in ("config", "outcome", "model_data")}}
        items = [
            TellItem(
                outcome,
                stimuli=stimuli,
                model_data=model_data,
                metadata={k: v[i] if isinstance(v, list) and len(v) == len(trials) > 1 else v for k, v in extras.items()},
            )
            for i, (stimuli, outcome) in enumerate(zip(trials, outcomes, strict=True))
        ]
        results = await self.service.tell_many(strategy_id, items)  # all trials or none
        return {
            "trials_recorded": sum(r.trials_recorded for r in results),
            "model_data_added": sum(r.model_data_added for r in results),
        }

    async def _query(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        strategy_id = self._current(conn)
        names = self.service.parameters(strategy_id).names
        query_type = message.get("query_type", "max")
        probability_space = _flag(message.get("probability_space", False), "probability_space")
        points: list[dict[str, Any]] | None = None
        if query_type == "prediction" and message.get("x") is not None:
            columns, rows = _columns(message["x"], "x")
            points = [{name: values[i] for name, values in columns.items()} for i in range(rows)]
        y = message.get("y")
        if y is not None:
            y = _single(y, "y")
            if isinstance(y, bool) or not isinstance(y, (int, float)):
                raise InvalidArgument(f"y: expected a number, got {y!r}", "y")
        constraints_in = message.get("constraints") or {}
        if not isinstance(constraints_in, dict):
            raise InvalidArgument("constraints: expected an object {parameter index or name: value}", "constraints")
        constraints = {str(key): _single(value, f"constraints.{key}") for key, value in constraints_in.items()}
        outcome = message.get("outcome", "")  # psyserve's addition: which outcome's model (several outcomes)
        if not isinstance(outcome, str):
            raise InvalidArgument(f"outcome: expected an outcome name, got {outcome!r}", "outcome")
        result = await self.service.query(
            strategy_id,
            query_type,
            probability_space,
            x=points,
            y=None if y is None else float(y),
            constraints=constraints,
            outcome=outcome,
        )
        x_out = {name: [_wire(p.x[name]) for p in result.points] for name in names}
        y_out = [p.probability if result.probability_space else p.mean for p in result.points]
        reply: JSON = {
            "query_type": result.query_type,
            "probability_space": result.probability_space,
            "constraints": constraints_in,
            "x": x_out,
            "y": y_out,
        }
        if any(p.level_probabilities for p in result.points):  # ordinal: one list of level probabilities per point
            reply["level_probabilities"] = [list(p.level_probabilities) for p in result.points]
        if outcome:
            reply["outcome"] = result.outcome
        return reply

    async def _parameters(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        shape = self.service.parameters(self._current(conn))
        return {p.name: [_wire(p.value), _wire(p.value)] if p.value is not None else [p.lower, p.upper] for p in shape.parameters}

    async def _info(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        return info_reply(self.service.info(self._current(conn))[0])

    async def _can_model(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        return {"can_model": self.service.resume(strategy_id=self._current(conn)).can_fit}

    async def _get_config(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        section, prop = message.get("section") or "", message.get("property") or ""
        if not isinstance(section, str) or not isinstance(prop, str):
            raise InvalidArgument("section and property must be strings", "section")
        return dict(await self.service.get_config(self._current(conn), section, prop))

    async def _finish_strategy(self, conn: _Connection, message: JSON, extra_info: JSON) -> JSON:
        result = await self.service.finish_strategy(self._current(conn))
        return {"finished_strategy": result.finished_strategy, "finished_strat_idx": result.finished_strat_idx}


async def start_aepsych_server(
    service: ExperimentService,
    host: str,
    port: int,
    *,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> AEPsychServer:
    """Serve AEPsych's JSON/TCP protocol for `service` on host:port (0 picks a free port)."""
    server = AEPsychServer(service, request_timeout=request_timeout, max_request_bytes=max_request_bytes)
    await server.start(host, port)
    log.info("psyserve serving AEPsych JSON/TCP on %s:%d", host, server.port)
    return server
