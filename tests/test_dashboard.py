"""The dashboard in a real headless browser (Debian's chromium through Playwright), /metrics through
prometheus_client's parser, and the JSON request log of a server subprocess."""

from __future__ import annotations

import http.client
import json
import math
import random
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import psyserve_client as pc
from conftest import CONFIGS, ServerThread, spawn_server
from psyserve.app import ServerOptions

TOKEN = "dashboard-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# a headless page is always visible: these make the open page believe it is hidden (another tab), then shown
HIDE = "() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); }"
SHOW = "() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); document.dispatchEvent(new Event('visibilitychange')); }"


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    db = str(Path(tmp_path_factory.mktemp("dash")) / "dash.db")
    srv = ServerThread(ServerOptions(port=0, db=db, workers=1, dashboard=True, dashboard_port=0, auth_token=TOKEN))
    yield srv
    srv.stop()


def base_url(srv: ServerThread) -> str:
    return f"http://127.0.0.1:{srv.running.dashboard_port}"


def observer(trial: pc.Trial, rng: random.Random) -> int:
    c, a = float(trial.params["c"]), float(trial.params["a"])  # type: ignore[arg-type]
    return int(rng.random() < 1 / (1 + math.exp(-(a - 0.5 * c) / 0.15)))


def http_get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(srv: ServerThread) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(base_url(srv) + "/metrics", TOKEN)
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_dashboard_in_a_browser(dash: ServerThread, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    rng = random.Random(1)
    with pc.Client(dash.address, timeout=120, token=TOKEN) as client:
        sid = client.configure(
            config_path=str(CONFIGS / "threshold_2d.ini"), config_name="P07", metadata={"participant_id": "P07"}
        ).strategy_id
        for _ in range(11):  # 10 Sobol trials and the first model trial
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome=observer(trial, rng), session="s1")
        told = len(client.list_trials(strategy_id=sid))
        base = base_url(dash)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                # a wrong token sees nothing: no strategy, no data feed
                intruder = browser.new_page()
                response = intruder.goto(f"{base}/?token=wrong-token")
                assert response is not None and response.status == 401
                assert "P07" not in intruder.content()
                assert intruder.locator("input[type=password]").count() == 1
                intruder.screenshot(path=str(tmp_path / "wrong-token.png"))
                feed = intruder.request.get(f"{base}/api/strategies")
                assert feed.status == 401 and "P07" not in feed.text()
                assert intruder.request.get(f"{base}/s/{sid}/trials.csv").status == 401
                assert intruder.request.get(f"{base}/metrics").status == 401
                response = intruder.goto(f"{base}/s/{sid}")
                assert response is not None and response.status == 401 and "P07" not in intruder.content()

                # the right token, once in the URL, becomes an HttpOnly cookie and leaves the URL
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{base}/?token={TOKEN}")
                assert "token" not in page.url
                cookies = page.context.cookies()
                assert [c["httpOnly"] for c in cookies if c["name"] == "psyserve_session"] == [True]
                assert all(TOKEN not in c["value"] for c in cookies)
                row = page.locator(f'tr[data-strategy="{sid}"]')
                row.wait_for(timeout=10_000)
                text = row.inner_text()
                assert "P07" in text and "participant_id=P07" in text and "opt_strat" in text
                page.wait_for_selector("#live.on", timeout=10_000)
                page.screenshot(path=str(tmp_path / "strategies.png"), full_page=True)

                # the strategy page: its trials, its plots
                row.locator("a").click()
                page.wait_for_url(f"{base}/s/{sid}")
                page.wait_for_selector("tr[data-trial]", timeout=10_000)
                assert page.locator("tr[data-trial]").count() == told
                assert "session=s1" in page.locator('tr[data-trial="1"]').inner_text()
                # the model plot is drawn by the server, the history by the page (SVG): one marker per
                # trial in each parameter's panel, and one per told trial in the response panel
                page.wait_for_function(
                    "() => { const i = document.getElementById('plot-field'); return i && i.complete && i.naturalWidth > 0; }",
                    timeout=60_000,
                )
                page.wait_for_selector("#plot-history svg", timeout=10_000)
                panels = page.locator("#plot-history g[data-panel]")
                assert panels.count() == 3  # c, a and the response
                assert [panels.nth(i).locator("circle.trial").count() for i in range(3)] == [told, told, told]
                page.wait_for_selector("#live.on", timeout=10_000)
                page.screenshot(path=str(tmp_path / "strategy.png"), full_page=True)

                # a tell made now shows up on the open page, without a reload
                page.evaluate("() => { window.notReloaded = true; }")
                trial = client.ask().trials[0]
                page.wait_for_selector(f'tr[data-trial="{trial.trial_id}"].pending', timeout=5_000)
                started = time.monotonic()
                client.tell(trial_id=trial.trial_id, outcome=1, note="late")
                page.wait_for_selector(f'tr[data-trial="{trial.trial_id}"].completed', timeout=5_000)
                shown_after = time.monotonic() - started
                assert page.evaluate("() => window.notReloaded === true")
                assert "note=late" in page.locator(f'tr[data-trial="{trial.trial_id}"]').inner_text()
                # the row was added, then replaced, in place: one row per trial, newest first, and the
                # changes came on the event stream (no feed request after the page loaded)
                assert page.locator("tr[data-trial]").count() == told + 1
                ids = page.locator("tr[data-trial]").evaluate_all("rows => rows.map(r => Number(r.dataset.trial))")
                assert ids == sorted(ids, reverse=True) and ids[0] == trial.trial_id
                requests = page.evaluate("() => performance.getEntriesByType('resource').map(e => e.name)")
                assert not [u for u in requests if "/api/strategies" in u], requests
                # a hidden page does no drawing; shown again, it catches up at once
                page.evaluate(HIDE)
                hidden_trial = client.ask().trials[0]
                client.tell(trial_id=hidden_trial.trial_id, outcome=0)
                page.wait_for_timeout(1500)  # a visible page would show it well within this
                assert page.locator(f'tr[data-trial="{hidden_trial.trial_id}"]').count() == 0
                page.evaluate(SHOW)
                page.wait_for_selector(f'tr[data-trial="{hidden_trial.trial_id}"].completed', timeout=5_000)
                assert page.locator("tr[data-trial]").count() == told + 2
                assert shown_after < 2.0, f"the tell took {shown_after:.2f} s to appear"
                print(f"tell visible on the page after {shown_after * 1000:.0f} ms")
                # ... and in the page's history plot (redrawn at most every 2 s), without a new model plot
                page.wait_for_function(
                    f"() => document.querySelectorAll('#plot-history g[data-panel] circle.trial[data-trial=\"{trial.trial_id}\"]').length === 3",
                    timeout=5_000,
                )

                # CSV download with the session cookie
                csv_text = page.request.get(f"{base}/s/{sid}/trials.csv").text()
                lines = csv_text.strip().splitlines()
                assert lines[0].startswith("strategy_id,strategy_name,trial_id") and len(lines) == told + 3
            finally:
                browser.close()
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["strategies.png", "strategy.png", "wrong-token.png"]


def test_login_form_and_errors(dash: ServerThread) -> None:
    base = base_url(dash)
    status, body = http_get(base + "/")
    assert status == 401 and 'name=next value="/"' in body and "P07" not in body
    request = urllib.request.Request(base + "/login", data=f"token={TOKEN}&next=//evil.example/".encode(), method="POST")
    opener = urllib.request.build_opener(NoRedirect())
    with pytest.raises(urllib.error.HTTPError) as redirect:
        opener.open(request, timeout=10)
    assert redirect.value.code == 303 and redirect.value.headers["location"] == "/"
    assert "HttpOnly" in redirect.value.headers["set-cookie"] and TOKEN not in redirect.value.headers["set-cookie"]
    bad = urllib.request.Request(base + "/login", data=b"token=nope", method="POST")
    with pytest.raises(urllib.error.HTTPError) as denied:
        opener.open(bad, timeout=10)
    assert denied.value.code == 401
    assert http_get(base + "/api/strategies/999", TOKEN)[0] == 404
    assert http_get(base + "/s/999/plot/history.png", TOKEN)[0] == 404
    status, body = http_get(base + "/s/1/plot/pie.png", TOKEN)
    assert status in (400, 404)


def test_event_feed_of_one_strategy_and_assets(dash: ServerThread) -> None:
    """A strategy page follows `/api/events?strategy=N`: only N's change mark, first and after a tell
    (another strategy's tells never appear on it); the page's assets come from memory."""
    base = base_url(dash)
    with pc.Client(dash.address, timeout=60, token=TOKEN) as client:
        other = client.configure(config_path=str(CONFIGS / "sobol_manual.ini")).strategy_id
        mine = client.configure(config_path=str(CONFIGS / "sobol_manual.ini")).strategy_id
        connection = http.client.HTTPConnection("127.0.0.1", dash.running.dashboard_port, timeout=20)
        try:
            connection.request("GET", f"/api/events?strategy={mine}", headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")

            def next_event() -> dict[str, int]:
                while True:
                    line = response.readline().decode().strip()
                    if line.startswith("data: "):
                        return dict(json.loads(line[6:]))

            first = next_event()
            assert set(first) == {str(mine)}
            for sid in (other, mine):  # a tell on each: only mine's moved mark reaches this feed
                trial = client.ask(strategy_id=sid).trials[0]
                client.tell(trial_id=trial.trial_id, outcome=1, strategy_id=sid)
            moved = next_event()
            assert set(moved) == {str(mine)} and moved[str(mine)] > first[str(mine)]
        finally:
            connection.close()
    status, body = http_get(base + "/api/events?strategy=x", TOKEN)
    assert status == 400 and "strategy" in body
    assert http_get(base + "/api/events?since=0", TOKEN)[0] == 400  # a feed is one strategy's
    status, body = http_get(base + "/api/events?strategy=1&since=x", TOKEN)
    assert status == 400 and "since" in body
    assert http_get(base + "/api/events?strategy=999&since=0", TOKEN)[0] == 404
    assert http_get(base + "/api/events?strategy=1")[0] == 401
    with urllib.request.urlopen(base + "/static/dashboard.js?v=1", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/javascript") and b"EventSource" in response.read()
    assert http_get(base + "/static/nope.js")[0] == 404


def test_strategy_feed_on_the_event_stream(dash: ServerThread) -> None:
    """`/api/events?strategy=N&since=0` (a strategy page): the whole feed first, then after each
    change only the trials that can have changed (from the oldest pending one), no request needed."""
    with pc.Client(dash.address, timeout=60, token=TOKEN) as client:
        sid = client.configure(config_path=str(CONFIGS / "sobol_manual.ini")).strategy_id
        for _ in range(2):
            trial = client.ask(strategy_id=sid).trials[0]
            client.tell(trial_id=trial.trial_id, outcome=1, strategy_id=sid)
        connection = http.client.HTTPConnection("127.0.0.1", dash.running.dashboard_port, timeout=20)
        try:
            connection.request("GET", f"/api/events?strategy={sid}&since=0", headers={"Authorization": f"Bearer {TOKEN}"})
            response = connection.getresponse()
            assert response.status == 200 and response.headers["content-type"].startswith("text/event-stream")

            def next_feed() -> dict[str, Any]:
                while True:
                    line = response.readline().decode().strip()
                    if line.startswith("data: "):
                        return dict(json.loads(line[6:]))

            first = next_feed()
            assert first["parameters"] and [(t["id"], t["state"]) for t in first["trials"]] == [
                (2, "completed"),
                (1, "completed"),
            ]
            pending = client.ask(strategy_id=sid).trials[0]
            delta = next_feed()
            assert "parameters" not in delta and delta["since"] == 3
            assert [(t["id"], t["state"]) for t in delta["trials"]] == [(pending.trial_id, "pending")]
            client.tell(trial_id=pending.trial_id, outcome=0, strategy_id=sid, note="x")
            delta = next_feed()  # the pending trial again, now told
            assert delta["since"] == pending.trial_id and delta["strategy"]["trials_completed"] == 3
            assert [(t["id"], t["state"], t["metadata"]) for t in delta["trials"]] == [
                (pending.trial_id, "completed", {"note": "x"})
            ]
        finally:
            connection.close()


def _dashboard_app(srv: ServerThread) -> Any:
    return next(x.dashboard for x in srv.running.extra if hasattr(x, "dashboard"))


def test_pages_of_one_strategy_share_feed_snapshots_and_plot_draws(dash: ServerThread) -> None:
    """Several pages on one strategy: one feed snapshot per change (the same trials to each, only
    "now" differs), and concurrent plot requests share one draw."""
    from concurrent.futures import ThreadPoolExecutor

    base = base_url(dash)
    app = _dashboard_app(dash)
    with pc.Client(dash.address, timeout=60, token=TOKEN) as client:
        sid = client.configure(config_path=str(CONFIGS / "sobol_manual.ini")).strategy_id
        for _ in range(3):
            trial = client.ask(strategy_id=sid).trials[0]
            client.tell(trial_id=trial.trial_id, outcome=1, strategy_id=sid)
        built = app.feeds.built
        answers = [json.loads(http_get(f"{base}/api/strategies/{sid}?since=2", TOKEN)[1]) for _ in range(5)]
        assert app.feeds.built == built + 1  # five pages, one snapshot
        assert all({**a, "now": 0} == {**answers[0], "now": 0} for a in answers)
        assert [t["id"] for t in answers[0]["trials"]] == [3, 2] and "parameters" not in answers[0]
        assert json.loads(http_get(f"{base}/api/strategies/{sid}", TOKEN)[1])["parameters"]  # another `since`: its own
        assert app.feeds.built == built + 2
        trial = client.ask(strategy_id=sid).trials[0]  # the mark moves: the next answer shows the new trial
        after = json.loads(http_get(f"{base}/api/strategies/{sid}?since=2", TOKEN)[1])
        assert (after["trials"][0]["id"], after["trials"][0]["state"]) == (trial.trial_id, "pending")
        assert app.feeds.built == built + 3

        def plot(_: int) -> bytes:
            request = urllib.request.Request(f"{base}/s/{sid}/plot/history.png", headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert response.status == 200 and response.headers["content-type"] == "image/png"
                return bytes(response.read())

        for _ in range(2):  # six pages asking at once, twice (a tell between): at most one draw each time
            client.tell(trial_id=trial.trial_id, outcome=0, strategy_id=sid)
            draws = app.renderer.draws[(sid, "history")]
            with ThreadPoolExecutor(6) as pool:
                images = list(pool.map(plot, range(6)))
            assert len(set(images)) == 1 and images[0].startswith(b"\x89PNG")
            assert app.renderer.draws[(sid, "history")] - draws <= 1
            trial = client.ask(strategy_id=sid).trials[0]
        assert app.renderer.draws[(sid, "history")] >= 1


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_move_with_rpcs(dash: ServerThread) -> None:
    assert http_get(base_url(dash) + "/metrics")[0] == 401
    before = scrape(dash)

    def moved_in(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
        return _value(samples, name, **labels) - _value(before, name, **labels)

    with pc.Client(dash.address, timeout=60, token=TOKEN) as client:
        client.configure(config_path=str(CONFIGS / "sobol_manual.ini"))
        for _ in range(3):
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome=1)
        with pytest.raises(pc.NotFoundError):
            client.ask(strategy_id=9999)
    with pc.Client(dash.address, timeout=60, token="wrong") as intruder, pytest.raises(pc.UnauthenticatedError):
        intruder.list_strategies()
    # A call ended by `context.abort` sends its status before the abort's exception reaches the
    # request observer, so the client can see the error a moment before the server counts it:
    # scrape until both errors are counted (bounded), then check every count exactly.
    errors = [("Ask", "NOT_FOUND"), ("ListStrategies", "UNAUTHENTICATED")]
    deadline = time.monotonic() + 10
    while True:
        after = scrape(dash)
        if all(moved_in(after, "psyserve_rpc_requests_total", method=m, code=c) for m, c in errors) or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    def moved(name: str, **labels: str) -> float:
        return moved_in(after, name, **labels)

    assert moved("psyserve_rpc_requests_total", method="Ask", code="OK") == 3
    assert moved("psyserve_rpc_requests_total", method="Tell", code="OK") == 3
    assert moved("psyserve_rpc_requests_total", method="Configure", code="OK") == 1
    assert moved("psyserve_rpc_requests_total", method="Ask", code="NOT_FOUND") == 1
    assert moved("psyserve_rpc_requests_total", method="ListStrategies", code="UNAUTHENTICATED") == 1
    assert moved("psyserve_rpc_duration_seconds_count", method="Ask", code="OK") == 3
    assert moved("psyserve_journal_commit_seconds_count") >= 7  # configure + 3 asks + 3 tells, grouped or not
    assert moved("psyserve_journal_commit_group_events_sum") == 7
    assert moved("psyserve_strategies_live", finished="false") == 1
    assert _value(after, "psyserve_compute_queue_length") >= 0
    # the browser test's model asks: each one precomputed or computed, and the worker's jobs timed
    asks = _value(after, "psyserve_model_asks_total", source="precomputed") + _value(
        after, "psyserve_model_asks_total", source="computed"
    )
    assert asks == sum(s.model_asks for s in dash.running.service.list_strategies())
    jobs = sum(v for (name, _), v in after.items() if name == "psyserve_compute_job_duration_seconds_count")
    assert jobs >= 1 or asks == 0


def test_json_request_log(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    proc = spawn_server(str(tmp_path / "j.db"), log, "--no-models", "--log-format", "json")
    try:
        with pc.Client(proc.address, timeout=30) as client:
            sid = client.configure(config_path=str(CONFIGS / "sobol_manual.ini")).strategy_id
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome=0)
            with pytest.raises(pc.InvalidArgumentError):
                client.tell(trial_id=trial.trial_id, outcome=7)
    finally:
        proc.kill(15)
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    rpcs = [r for r in records if r["logger"] == "psyserve.rpc"]
    by_method = {(r["method"], r["status"]): r for r in rpcs}
    ask = by_method[("Ask", "OK")]
    assert ask["strategy"] == sid and ask["trial"] == trial.trial_id and ask["duration_ms"] > 0
    tell = by_method[("Tell", "OK")]
    assert tell["strategy"] == sid and tell["trial"] == trial.trial_id
    assert by_method[("Tell", "INVALID_ARGUMENT")]["trial"] == trial.trial_id
    assert by_method[("Configure", "OK")]["strategy"] == sid
    assert all({"time", "level", "message"} <= set(r) for r in records)


def test_dashboard_on_the_http_port(tmp_path: Path) -> None:
    """With --http-port the dashboard and /metrics are mounted on the HTTP port, beside the API."""
    srv = ServerThread(
        ServerOptions(port=0, db=str(tmp_path / "h.db"), models=False, dashboard=True, http_port=0, auth_token=TOKEN)
    )
    try:
        assert srv.running.dashboard_port is None and srv.running.http is not None
        base = f"http://127.0.0.1:{srv.running.http.port}"
        with pc.Client(srv.address, timeout=30, token=TOKEN) as client:
            sid = client.configure(config_path=str(CONFIGS / "sobol_manual.ini"), config_name="H1").strategy_id
            trial = client.ask().trials[0]
            client.tell(trial_id=trial.trial_id, outcome=1)
        status, body = http_get(base + "/api/strategies", TOKEN)
        assert status == 200 and [s["name"] for s in json.loads(body)["strategies"]] == ["H1"]
        assert http_get(base + "/api/strategies")[0] == 401
        status, body = http_get(f"{base}/api/strategies/{sid}", TOKEN)
        assert status == 200 and [t["state"] for t in json.loads(body)["trials"]] == ["completed"]
        status, text = http_get(base + "/metrics", TOKEN)
        samples = {(s.name, s.labels.get("method")): s.value for f in text_string_to_metric_families(text) for s in f.samples}
        assert status == 200 and samples[("psyserve_rpc_requests_total", "Tell")] == 1
        # the API still answers on the same port (Connect JSON)
        request = urllib.request.Request(
            base + "/psyserve.v1.ExperimentService/ListStrategies",
            data=b"{}",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert "H1" in response.read().decode()
    finally:
        srv.stop()
