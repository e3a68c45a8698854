"""Which strategies are held in memory: least-recently-used order, the idle timeout and the bound.

Owns the policy (what is due for eviction, in which order) and the counters operators watch, plus
the plain-JSON codec that stores an evicted strategy's summary (a frozen dataclass view) in the
journal's `snapshots` table. Never decides whether a strategy may be dropped (the service checks
that nothing is in flight and the journal holds it all) and never touches SQL, models or transports.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import time
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ResidencyStats:
    """Counters since the server started (Prometheus metrics and the benchmarks read them)."""

    loads: int = 0  # strategies rebuilt from the journal (at start or on first access)
    evictions: int = 0  # strategies dropped from memory (their summary kept)
    events_replayed: int = 0  # journal events applied by those loads
    snapshot_failures: int = 0  # summaries that could not be stored (the strategy then replays at start)


@dataclass
class Residency:
    """Resident strategy ids, least recently used first, with the time of their last use.

    `max_resident`: the most strategies kept in memory (least recently used ones go first);
    `idle_seconds`: a strategy unused for this long leaves memory even under the bound."""

    max_resident: int = 1000
    idle_seconds: float = 300.0
    stats: ResidencyStats = field(default_factory=ResidencyStats)
    _last_used: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_resident < 1:
            raise ValueError(f"max_resident: at least 1 strategy must stay in memory, got {self.max_resident}")
        if not self.idle_seconds > 0:
            raise ValueError(f"idle_seconds: must be a positive number of seconds, got {self.idle_seconds}")

    def __len__(self) -> int:
        return len(self._last_used)

    def touch(self, strategy_id: int) -> None:
        """The strategy was just used: it becomes the most recently used."""
        self._last_used.pop(strategy_id, None)
        self._last_used[strategy_id] = time.monotonic()

    def drop(self, strategy_id: int) -> None:
        self._last_used.pop(strategy_id, None)

    def due(self) -> Iterator[int]:
        """Ids the policy wants out, least recently used first: while more than `max_resident` are
        resident, and every one idle for `idle_seconds`. The caller evicts or skips (busy) each;
        the count left over the bound is re-read after each step."""
        now = time.monotonic()
        for strategy_id, used in list(self._last_used.items()):
            if strategy_id not in self._last_used:
                continue
            if len(self._last_used) <= self.max_resident and now - used < self.idle_seconds:
                return
            yield strategy_id


# ---------------------------------------------------------------------- summaries as plain JSON
def to_plain(value: Any) -> Any:
    """A (nested) dataclass, enum, tuple, list or dict as JSON-ready values (tuples become lists)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def from_plain(kind: Any, data: Any) -> Any:
    """The inverse of to_plain for the annotated type `kind` (dataclasses, enums, tuples, lists,
    dicts, X | None, and scalar unions such as RawValue, which JSON keeps as they are)."""
    return _decoder(kind)(data)


def _same(data: Any) -> Any:
    return data


def _number(data: Any) -> Any:
    return float(data) if isinstance(data, int) and not isinstance(data, bool) else data


@functools.cache
def _decoder(kind: Any) -> Callable[[Any], Any]:
    """A decoding function per annotated type, built once (the types' hints are read once)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        structured = [a for a in options if dataclasses.is_dataclass(a) or typing.get_origin(a) is not None]
        if len(structured) != 1:
            return _same  # scalars (RawValue, float | None): JSON keeps them as they are
        inner = _decoder(structured[0])
        return lambda data: None if data is None else inner(data)
    if origin is tuple:
        args = typing.get_args(kind)
        if len(args) == 2 and args[1] is Ellipsis:
            item = _decoder(args[0])
            return lambda data: tuple(item(v) for v in data)
        items = [_decoder(a) for a in args]
        return lambda data: tuple(f(v) for f, v in zip(items, data, strict=True))
    if origin is list:
        item = _decoder(typing.get_args(kind)[0])
        return lambda data: [item(v) for v in data]
    if origin is dict:
        value = _decoder(typing.get_args(kind)[1])
        return lambda data: {k: value(v) for k, v in data.items()}
    if isinstance(kind, type) and dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        fields = [(f.name, _decoder(hints[f.name])) for f in dataclasses.fields(kind) if f.init]
        cls: Any = kind
        return lambda data: cls(**{name: f(data[name]) for name, f in fields if name in data})
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return kind
    if kind is float:
        return _number
    return _same
