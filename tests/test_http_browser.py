"""gRPC-Web from a real browser: headless Chromium (Debian's, driven by Playwright) loads a page from another
loopback origin that runs a short experiment against psyserve's HTTP port with fetch; the test reads the result."""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import psyserve_client as pc
from conftest import CONFIGS, ServerThread
from psyserve.app import ServerOptions

CHROMIUM = "/usr/bin/chromium"
PAGE = Path(__file__).resolve().parent / "web" / "grpc_web_experiment.html"
TOKEN = "browser-token"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")


@pytest.fixture
def static_site(tmp_path: Path) -> Iterator[int]:
    """The page and its config, served by a plain static HTTP server on its own loopback port (another origin)."""
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(PAGE, site / "index.html")
    shutil.copy(CONFIGS / "sobol_manual.ini", site / "sobol_manual.ini")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield int(httpd.server_address[1])
    httpd.shutdown()
    httpd.server_close()


def run_page(url: str) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("document.getElementById('result').textContent !== ''", timeout=60_000)
            return json.loads(page.inner_text("#result"))  # type: ignore[no-any-return]
        finally:
            browser.close()


@pytest.mark.slow
def test_browser_runs_an_experiment_over_grpc_web(static_site: int, tmp_path: Path) -> None:
    page_origin = f"http://127.0.0.1:{static_site}"
    srv = ServerThread(
        ServerOptions(port=0, db=str(tmp_path / "b.db"), models=False, http_port=0, auth_token=TOKEN, cors_origins=(page_origin,))
    )
    try:
        api = f"http://127.0.0.1:{srv.running.http.port}"
        result = run_page(f"{page_origin}/index.html?server={api}&token={TOKEN}")
        assert "error" not in result, result
        trials = result["trials"]
        assert len(trials) == 9 and result["finished"] and result["trialsCompleted"] == 9  # 6 Sobol + 3 manual
        assert [t["completed"] for t in trials] == list(range(1, 10))
        # what the page saw and told is what the server journaled (read back over gRPC)
        with pc.Client(srv.address, timeout=10, token=TOKEN) as client:
            recorded = client.list_trials(strategy_id=result["strategyId"])
        assert [t.trial_id for t in recorded] == [t["trialId"] for t in trials]
        for seen, stored in zip(trials, recorded, strict=True):
            assert seen["values"] == stored.params and stored.outcomes[0].value == seen["outcome"]
        assert trials[6]["values"] == {"contrast": 0.5, "frequency": 2, "shape": "circle", "eye": False}  # the manual points

        # the same page from an origin the server was not told about: the browser's CORS check refuses it
        refused = run_page(f"http://localhost:{static_site}/index.html?server={api}&token={TOKEN}")
        assert "Failed to fetch" in refused.get("error", ""), refused
        with pc.Client(srv.address, timeout=10, token=TOKEN) as client:
            assert len(client.list_strategies()) == 1  # nothing reached the service
    finally:
        srv.stop()
