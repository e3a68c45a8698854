"""The dashboard's ASGI app: strategy list, a page per strategy, JSON + server-sent events, plots, CSV, /metrics.

Reads only the ExperimentService's public methods (resume, list_strategies, list_trials, query)
and psyserve.export's rows; plots are drawn by psyserve_client.plot in a separate low-priority
process, model queries run at background priority. Knows nothing of gRPC or the journal.
Longer than ~500 lines: the pages, feeds, access checks and embedded server are one app, kept in
one file so that what the dashboard exposes is reviewed in one place.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import html
import importlib
import io
import json
import logging
import math
import multiprocessing
import os
import socket
import time
import urllib.parse
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from psyserve_client.plot import Parameter, PlotError, default_kind, plan

from ..errors import FailedPrecondition, NotFound, ServiceError, Unavailable
from ..export import columns, trial_rows, write_csv
from ..observability import CONTENT_TYPE, Metrics
from ..plots import figure_bytes, plot_data, predict
from ..service import ExperimentService, StrategyView, TrialView

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
_ASSETS = {
    "dashboard.js": ((STATIC / "dashboard.js").read_bytes(), "text/javascript; charset=utf-8"),
    "style.css": ((STATIC / "style.css").read_bytes(), "text/css; charset=utf-8"),
}
COOKIE = "psyserve_session"
ASSET_VERSION = "4"
WATCH_SECONDS = 0.2  # how often the watcher looks for changes (pages update within a second)
# Server-drawn plots (the trial history is drawn by the page itself from the trial feed): at most one
# redraw per strategy and plot this often, and only when what they show changed (version_of).
TRIAL_PLOT_SECONDS = 5.0  # plots of the trials only (best so far, sweep)
MODEL_PLOT_SECONDS = 10.0  # plots that need a model query (field, slice, utility)
RETRY_SECONDS = 2.0  # a plot that could not be drawn (no model yet) is tried again at most this often
RENDER_TIMEOUT = 30.0
MAX_TABLE_ROWS = 500
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# ---------------------------------------------------------------------- change watching
def version_of(view: StrategyView) -> str:
    """What a server-drawn plot shows of a strategy: the told data, the phase and whether a model
    can be fitted (asks alone do not change it; a new tell is what brings a new fit)."""
    return f"{view.trials_completed}.{view.current_phase_index}.{int(view.is_finished)}.{int(view.can_fit)}"


class Watcher:
    """While anyone listens, looks at the service's change marks (one integer per strategy, no views
    built) every `interval` seconds and wakes the listeners when any moved."""

    def __init__(self, service: ExperimentService, interval: float = WATCH_SECONDS) -> None:
        self.service = service
        self.interval = interval
        self.marks: dict[int, int] = {}
        self._changed = asyncio.Event()
        self._listeners = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            marks = self.service.change_marks()
            if marks != self.marks:
                self.marks = marks
                changed, self._changed = self._changed, asyncio.Event()
                changed.set()

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[None]:
        self._listeners += 1
        if self._task is None or self._task.done():
            self.marks = self.service.change_marks()
            self._task = asyncio.create_task(self._run(), name="dashboard-watcher")
        try:
            yield
        finally:
            self._listeners -= 1
            if not self._listeners and self._task is not None:
                self._task.cancel()
                self._task = None

    async def wait(self, timeout: float) -> bool:
        """Wait for the next change (True) or the timeout (False)."""
        event = self._changed
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


# ---------------------------------------------------------------------- rendering
def _render_init() -> None:
    """The render process runs well below the compute workers' priority (they are at nice 5): on a
    busy machine plots wait, asks do not. It imports matplotlib once."""
    with contextlib.suppress(OSError):
        os.nice(15)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure


def _noop() -> None:
    """Run in the render process by Renderer.warm."""


@dataclass
class _Cached:
    version: str
    body: bytes
    drawn_at: float


@dataclass
class Renderer:
    """Draws plots in one separate process, caches them per strategy, plot and data version, and
    redraws a plot at most every TRIAL_PLOT_SECONDS (MODEL_PLOT_SECONDS when it needs the model):
    however many pages watch a strategy, they share one draw (one that failed, e.g. no model yet,
    is tried again at most every RETRY_SECONDS). `draws` counts the draws started, by (strategy, plot)."""

    service: ExperimentService
    cache: dict[tuple[int, str], _Cached] = field(default_factory=dict)
    inflight: dict[tuple[int, str], asyncio.Future[bytes]] = field(default_factory=dict)
    failed: dict[tuple[int, str], tuple[float, Exception]] = field(default_factory=dict)
    draws: Counter[tuple[int, str]] = field(default_factory=Counter)
    executor: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self.executor is None:
            self.executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_render_init)
        return self.executor

    def warm(self) -> None:
        """Start the render process now (with the server), not at the first plot: starting a process
        holds the event loop, and during an experiment that would delay the participants' asks."""
        self._executor().submit(_noop)

    async def plot(self, strategy_id: int, kind: str) -> tuple[bytes, bool]:
        """(PNG bytes, fresh?) for a plot of the strategy as it is now, or the last one drawn when
        it was drawn too recently. Raises NotFound, PlotError or FailedPrecondition (no model yet)."""
        view = self.service.resume(strategy_id=strategy_id)
        version = version_of(view)
        key = (strategy_id, kind)
        cached = self.cache.get(key)
        if cached is not None and cached.version == version:
            return cached.body, True
        throttle = TRIAL_PLOT_SECONDS if kind in ("history", "best", "sweep") else MODEL_PLOT_SECONDS
        if cached is not None and time.monotonic() - cached.drawn_at < throttle:
            return cached.body, False
        future = self.inflight.get(key)
        if future is None:
            failure = self.failed.get(key)
            if failure is not None and time.monotonic() - failure[0] < RETRY_SECONDS:
                raise failure[1].with_traceback(None)  # the last try's answer: no new try sooner
            future = asyncio.ensure_future(self._draw(strategy_id, kind, version))
            self.inflight[key] = future
            self.draws[key] += 1
            future.add_done_callback(lambda _: self.inflight.pop(key, None))
        try:
            return await asyncio.wait_for(asyncio.shield(future), RENDER_TIMEOUT), True
        except TimeoutError:
            if cached is not None:
                return cached.body, False
            raise Unavailable("the plot is still being drawn (the compute pool is busy): try again shortly") from None

    async def _draw(self, strategy_id: int, kind: str, version: str) -> bytes:
        try:
            data = await plot_data(self.service, strategy_id)
            planned = plan(data, kind)
            predictions = await predict(self.service, strategy_id, planned, background=True)
            loop = asyncio.get_running_loop()
            body = await loop.run_in_executor(self._executor(), figure_bytes, data, planned, predictions, "png", (8, 5))
        except (PlotError, FailedPrecondition) as exc:  # not drawable (yet): the same answer until retried
            self.failed[(strategy_id, kind)] = (time.monotonic(), exc)
            raise
        self.failed.pop((strategy_id, kind), None)
        self.cache[(strategy_id, kind)] = _Cached(version, body, time.monotonic())
        return body

    def close(self) -> None:
        for future in self.inflight.values():
            future.cancel()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None


# ---------------------------------------------------------------------- trial feed snapshots
@dataclass(frozen=True)
class _Feed:
    """One answer of a strategy's feed: the change mark it shows, its JSON (without "now") and the
    (id, state) of the trials in it."""

    mark: int
    body: bytes
    trials: tuple[tuple[int, str], ...]


def _stamped(body: bytes) -> bytes:
    """A shared feed answer with the time of sending in front (the page ages "last activity" by it)."""
    return b'{"now":' + repr(time.time()).encode() + b"," + body[1:]


class FeedCache:
    """The strategy feed's answers per strategy and `since`, kept while the strategy's change mark
    stays the same: N pages watching one strategy cost one snapshot per change, not N. At most
    PER_STRATEGY answers per strategy (the newest); a moved mark drops them all."""

    PER_STRATEGY = 8

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, dict[int, _Feed]]] = {}
        self.built = 0  # snapshots built (for tests and benchmarks)
        self.served = 0  # answers served from a snapshot

    def get(self, strategy_id: int, mark: int | None, since: int) -> _Feed | None:
        entry = self.entries.get(strategy_id)
        if mark is None or entry is None or entry[0] != mark:
            return None
        feed = entry[1].get(since)
        if feed is not None:
            self.served += 1
        return feed

    def put(self, strategy_id: int, since: int, feed: _Feed) -> None:
        self.built += 1
        entry = self.entries.get(strategy_id)
        if entry is None or entry[0] != feed.mark:
            entry = (feed.mark, {})
            self.entries[strategy_id] = entry
        answers = entry[1]
        answers[since] = feed
        while len(answers) > self.PER_STRATEGY:
            del answers[next(iter(answers))]


# ---------------------------------------------------------------------- access
class Access:
    """The API's token guards the dashboard too: `Authorization: Bearer`, or a session cookie got
    by giving the token once (the prompt, or `?token=`). The cookie holds an HMAC of the token."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.session = hmac.new(token.encode(), b"psyserve-dashboard-session", hashlib.sha256).hexdigest() if token else ""

    def token_ok(self, offered: str) -> bool:
        return self.token is not None and hmac.compare_digest(offered.encode(), self.token.encode())

    def allowed(self, request: Request) -> bool:
        if self.token is None:
            return True
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self.session.encode()):
            return True
        scheme, _, offered = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self.token_ok(offered.strip())

    def set_cookie(self, response: Response, secure: bool) -> None:
        response.set_cookie(COOKIE, self.session, httponly=True, samesite="strict", secure=secure, path="/")


# ---------------------------------------------------------------------- pages
def _page(title: str, body: str, script: str | None = None, data: dict[str, str] | None = None) -> str:
    attrs = "".join(f' data-{k}="{html.escape(v)}"' for k, v in (data or {}).items())
    script_tag = f'<script src="/static/{script}?v={ASSET_VERSION}" defer></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f'<meta name=viewport content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f'<link rel=stylesheet href="/static/style.css?v={ASSET_VERSION}">{script_tag}</head>'
        f"<body{attrs}><header><a href=/>psyserve</a> <span>{html.escape(title)}</span>"
        '<span id=live class=live title="live updates">●</span></header><main>'
        f"{body}</main></body></html>"
    )


def _login_page(message: str, next_path: str) -> str:
    return _page(
        "sign in",
        f"<p class=error>{html.escape(message)}</p>"
        '<form method=post action="/login" class=login>'
        f'<input type=hidden name=next value="{html.escape(next_path)}">'
        "<label>Server token <input type=password name=token autocomplete=current-password autofocus></label>"
        "<button type=submit>Open dashboard</button></form>",
    )


def _safe_next(path: str) -> str:
    """Only paths on this site (never //host or scheme://) are followed after signing in."""
    return path if path.startswith("/") and not path.startswith("//") and "\\" not in path else "/"


def _strategy_json(view: StrategyView, mark: int) -> dict[str, Any]:
    phase = view.phases[view.current_phase_index]
    return {
        "id": view.strategy_id,
        "name": view.name,
        "metadata": view.metadata,
        "phase": phase.name,
        "phase_index": view.current_phase_index,
        "phase_count": len(view.phases),
        "finished": view.is_finished,
        "trials_completed": view.trials_completed,
        "trials_pending": view.trials_pending,
        "trials_asked": view.trials_asked,
        "last_activity": view.last_activity,
        "model_asks": view.model_asks,
        "precomputed_asks": view.precomputed_asks,
        "hit_rate": view.precomputed_asks / view.model_asks if view.model_asks else None,
        "version": version_of(view),
        "mark": mark,
    }


def _json_value(value: Any) -> Any:
    """A parameter value for the JSON feed (the page formats it; non-finite floats as text)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _trial_json(t: TrialView) -> dict[str, Any]:
    return {
        "id": t.trial_id,
        "state": t.state,
        "phase": t.phase_name,
        "phase_index": t.phase_index,
        "params": [{k: _json_value(v) for k, v in s.items()} for s in t.stimuli],
        "outcomes": {o.name: _json_value(o.value) for o in t.outcomes},
        "metadata": {k: str(v) for k, v in t.metadata.items()},
    }


def _parameter_json(p: Parameter) -> dict[str, Any]:
    return {
        "name": p.name,
        "type": p.type,
        "lower": p.lower_bound,
        "upper": p.upper_bound,
        "log": p.log_scale,
        "choices": [str(c) for c in p.choices],
    }


class DashboardApp:
    """The ASGI app. `app` is the Starlette application; mount it or serve it with DashboardServer."""

    def __init__(
        self, service: ExperimentService, token: str | None = None, metrics: Metrics | None = None, secure_cookie: bool = False
    ) -> None:
        self.service = service
        self.access = Access(token)
        self.metrics = metrics
        self.secure_cookie = secure_cookie
        self.watcher = Watcher(service)
        self.feeds = FeedCache()
        self.renderer = Renderer(service)
        self.renderer.warm()
        # Starlette's streaming responses (the event feed) import anyio's asyncio backend at their first
        # use: ~0.1 s on the event loop, while participants ask. Import it with the server instead.
        importlib.import_module("anyio._backends._asyncio")
        self.app = Starlette(
            routes=[
                Route("/", self.index),
                Route("/login", self.login, methods=["GET", "POST"]),
                Route("/s/{sid:int}", self.strategy_page),
                Route("/s/{sid:int}/trials.csv", self.csv),
                Route("/s/{sid:int}/plot/{kind:str}.png", self.plot),
                Route("/api/strategies", self.api_strategies),
                Route("/api/strategies/{sid:int}", self.api_strategy),
                Route("/api/events", self.events),
                Route("/metrics", self.metrics_endpoint),
                Route("/static/{name:str}", self.static),
            ],
        )

    async def static(self, request: Request) -> Response:
        """The page's script and stylesheet, read once at start and served from memory (no file
        reads in threads while an experiment runs); cacheable, as their URLs carry ASSET_VERSION."""
        asset = _ASSETS.get(str(request.path_params["name"]))
        if asset is None:
            return PlainTextResponse("not found", status_code=404)
        body, media_type = asset
        return Response(body, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            send = _with_headers(send)
        await self.app(scope, receive, send)

    def close(self) -> None:
        self.watcher.close()
        self.renderer.close()

    # ------------------------------------------------------------ access
    def _denied(self, request: Request, page: bool) -> Response | None:
        """None if the request may see data; else the answer to give (a sign-in page, or 401)."""
        offered = request.query_params.get("token")
        if page and offered is not None:
            if self.access.token is None or self.access.token_ok(offered):
                query = urllib.parse.urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
                response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
                if self.access.token is not None:
                    self.access.set_cookie(response, self.secure_cookie)
                return response
            return HTMLResponse(_login_page("That token is not this server's token.", request.url.path), status_code=401)
        if self.access.allowed(request):
            return None
        if page:
            return HTMLResponse(_login_page("This dashboard needs the server's token.", request.url.path), status_code=401)
        return JSONResponse(
            {"error": "unauthenticated: sign in at /login or send 'authorization: Bearer <token>'"}, status_code=401
        )

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            if self.access.token is None or self.access.allowed(request):
                return RedirectResponse("/", status_code=303)
            return HTMLResponse(_login_page("This dashboard needs the server's token.", "/"))
        body = (await request.body())[:8192].decode("utf-8", "replace")
        form = urllib.parse.parse_qs(body)
        token = (form.get("token") or [""])[0]
        target = _safe_next((form.get("next") or ["/"])[0])
        if self.access.token is not None and not self.access.token_ok(token):
            return HTMLResponse(_login_page("That token is not this server's token.", target), status_code=401)
        response = RedirectResponse(target, status_code=303)
        if self.access.token is not None:
            self.access.set_cookie(response, self.secure_cookie)
        return response

    # ------------------------------------------------------------ pages
    async def index(self, request: Request) -> Response:
        if (denied := self._denied(request, page=True)) is not None:
            return denied
        body = (
            "<h1>Strategies</h1><table id=strategies class=grid><thead><tr>"
            "<th>id</th><th>name</th><th>participant / metadata</th><th>phase</th><th>done</th><th>pending</th>"
            "<th>last activity</th><th>speculation hits</th></tr></thead><tbody></tbody></table>"
            "<p class=hint>Updates live. <a href=/metrics>/metrics</a></p>"
        )
        return HTMLResponse(_page("strategies", body, "dashboard.js", {"page": "list"}))

    async def strategy_page(self, request: Request) -> Response:
        if (denied := self._denied(request, page=True)) is not None:
            return denied
        sid = int(request.path_params["sid"])
        try:
            view = self.service.resume(strategy_id=sid)
        except NotFound:
            return HTMLResponse(_page("not found", f"<p class=error>No strategy {sid}.</p>"), status_code=404)
        title = f"strategy {sid}" + (f" {view.name}" if view.name else "")
        body = (
            f"<h1>{html.escape(title)}</h1><div id=summary class=summary></div>"
            f'<p><a id=csv href="/s/{sid}/trials.csv" download>Download trials (CSV)</a></p>'
            "<div id=plots class=plots></div>"
            "<h2>Trials</h2><table id=trials class=grid><thead></thead><tbody></tbody></table>"
        )
        return HTMLResponse(_page(title, body, "dashboard.js", {"page": "strategy", "strategy": str(sid)}))

    # ------------------------------------------------------------ data
    async def api_strategies(self, request: Request) -> Response:
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        views = sorted(self.service.list_strategies(), key=lambda v: v.strategy_id)
        marks = self.service.change_marks()
        return JSONResponse({"now": time.time(), "strategies": [_strategy_json(v, marks.get(v.strategy_id, 0)) for v in views]})

    async def _feed(self, sid: int, since: int) -> _Feed:
        """The strategy's feed answer from trial `since` on: shared by every page watching it
        while its change mark stays put (FeedCache). Raises NotFound."""
        feed = self.feeds.get(sid, self.service.change_marks().get(sid), since)
        if feed is not None:
            return feed
        shape = await plot_data(self.service, sid, with_trials=False)  # brings an evicted strategy back
        trials = await self.service.list_trials(sid, since=since)
        view = self.service.resume(strategy_id=sid)
        # from here on nothing awaits: the trials, the view and the mark are one state
        mark = self.service.change_marks().get(sid, 0)
        main = default_kind(shape)
        trials.sort(key=lambda t: -t.trial_id)
        trials = trials[:MAX_TABLE_ROWS]
        answer: dict[str, Any] = {
            "strategy": _strategy_json(view, mark),
            "phases": [
                {
                    "name": p.name,
                    "generator": p.generator,
                    "model": p.model,
                    "acqf": p.acqf,
                    "asks": p.asks,
                    "finished": p.finished,
                }
                for p in view.phases
            ],
            "plots": [] if main == "history" else [main],  # the page draws the history itself
            "since": since,
            "trials": [_trial_json(t) for t in trials],
        }
        if not since:
            answer["parameters"] = [_parameter_json(p) for p in shape.parameters]
            answer["outcome_type"] = shape.outcome_type
        body = json.dumps(answer, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        feed = _Feed(mark, body, tuple((t.trial_id, t.state) for t in trials))
        self.feeds.put(sid, since, feed)
        return feed

    async def api_strategy(self, request: Request) -> Response:
        """One strategy: its summary, the server-drawn plot kinds and its trials; with `?since=N`
        only the trials with id >= N (a delta: from the oldest trial that can still change), and
        the parameters only without it. (A strategy page gets the same answers pushed to it by
        /api/events?strategy=N&since=0.)"""
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        sid = int(request.path_params["sid"])
        try:
            since = int(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": "since: must be an integer trial id"}, status_code=400)
        try:
            feed = await self._feed(sid, since)
        except NotFound as exc:
            return JSONResponse({"error": exc.message}, status_code=404)
        return Response(_stamped(feed.body), media_type="application/json")

    async def events(self, request: Request) -> Response:
        """Server-sent events: the strategies' change marks, all at first, then those that moved
        (whenever any did, at most every WATCH_SECONDS; a comment every 15 s keeps the connection
        open). `?strategy=N`: only strategy N's mark. `?strategy=N&since=S` (a strategy page): the
        strategy's feed itself instead of its mark, first from trial S on (0: everything, with the
        parameters), then, whenever its mark moved, the trials that changed since (from the oldest
        trial still pending): a page needs no request per change."""
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        only: int | None = None
        if "strategy" in request.query_params:
            try:
                only = int(request.query_params["strategy"])
            except ValueError:
                return JSONResponse({"error": "strategy: must be an integer strategy id"}, status_code=400)
        headers = {"X-Accel-Buffering": "no"}
        if "since" in request.query_params:
            try:
                since = int(request.query_params["since"])
            except ValueError:
                return JSONResponse({"error": "since: must be an integer trial id"}, status_code=400)
            if only is None:
                return JSONResponse({"error": "since: only with strategy (the feed of one strategy)"}, status_code=400)
            try:
                first = await self._feed(only, since)
            except NotFound as exc:
                return JSONResponse({"error": exc.message}, status_code=404)
            return StreamingResponse(self._feed_stream(only, since, first), media_type="text/event-stream", headers=headers)

        async def stream() -> AsyncIterator[str]:
            async with self.watcher.listening():
                sent: dict[int, int] = {}
                first = True
                while True:
                    marks = self.watcher.marks
                    moved = {k: v for k, v in marks.items() if sent.get(k) != v and (only is None or k == only)}
                    if moved or first:
                        sent.update(moved)
                        first = False
                        yield f"data: {json.dumps({str(k): v for k, v in moved.items()})}\n\n"
                    elif not await self.watcher.wait(15.0):
                        yield ": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    async def _feed_stream(self, sid: int, since: int, feed: _Feed) -> AsyncIterator[bytes]:
        """One strategy page's feed: `feed` first, then a delta whenever the strategy's mark moved.
        Each delta starts at the oldest trial this stream has sent as pending (or after the newest
        sent), as the page's own `since` would: a trial is sent again until it is settled."""
        known: dict[int, str] = {}
        async with self.watcher.listening():
            while True:
                yield b"data: " + _stamped(feed.body) + b"\n\n"
                known.update(feed.trials)
                if known:
                    pending = [t for t, state in known.items() if state == "pending"]
                    since = min(pending) if pending else max(known) + 1
                    known = {t: state for t, state in known.items() if t >= since}
                while self.watcher.marks.get(sid, 0) <= feed.mark:  # marks only grow; the watcher's may lag
                    if not await self.watcher.wait(15.0):
                        yield b": keep-alive\n\n"
                try:
                    feed = await self._feed(sid, since)
                except NotFound:
                    return

    async def csv(self, request: Request) -> Response:
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        sid = int(request.path_params["sid"])
        try:
            await self.service.strategy(sid)  # in memory (rebuilt if it was evicted) for the copy below, which never awaits
        except NotFound as exc:
            return PlainTextResponse(exc.message, status_code=404)
        out = io.StringIO()
        write_csv(trial_rows(self.service, sid), columns(self.service, sid), out)
        return Response(
            out.getvalue(),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="strategy-{sid}-trials.csv"'},
        )

    async def plot(self, request: Request) -> Response:
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        sid, kind = int(request.path_params["sid"]), str(request.path_params["kind"])
        try:
            body, fresh = await self.renderer.plot(sid, kind)
        except NotFound as exc:
            return PlainTextResponse(exc.message, status_code=404)
        except PlotError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        except (FailedPrecondition, Unavailable) as exc:
            return PlainTextResponse(exc.message, status_code=503)
        except ServiceError as exc:
            return PlainTextResponse(exc.message, status_code=500)
        return Response(body, media_type="image/png", headers={"X-Plot-Fresh": "1" if fresh else "0"})

    async def metrics_endpoint(self, request: Request) -> Response:
        if (denied := self._denied(request, page=False)) is not None:
            return denied
        if self.metrics is None:
            return PlainTextResponse("metrics are off", status_code=404)
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)


def _with_headers(send: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
    async def wrapped(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower() for k, _ in headers}
            for name, value in _SECURITY_HEADERS.items():
                if name.lower().encode() not in present:
                    headers.append((name.lower().encode(), value.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


# ---------------------------------------------------------------------- serving in the event loop
class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside psyserve's own event loop: psyserve, not uvicorn, handles SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class DashboardServer:
    """A running dashboard; `close()` stops it (the RunningServer closes it with the rest)."""

    dashboard: DashboardApp
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def close(self) -> None:
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        self.dashboard.close()


async def start_dashboard(
    dashboard: DashboardApp, host: str, port: int, ssl_certfile: str | None = None, ssl_keyfile: str | None = None
) -> DashboardServer:
    """Serve the dashboard app with uvicorn on `host:port` (0: a free port) in the running loop."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise OSError(f"--dashboard-port: could not bind {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    config = uvicorn.Config(
        dashboard,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=1,
        ssl_certfile=ssl_certfile,
        ssl_keyfile=ssl_keyfile,
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="dashboard")
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise OSError("the dashboard stopped while starting")
        await asyncio.sleep(0.01)
    return DashboardServer(dashboard, server, task, int(sock.getsockname()[1]))
