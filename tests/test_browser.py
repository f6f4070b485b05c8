"""The dashboard in a real browser: `streamlit run run_dashboard.py` on a free localhost port, driven by
Playwright in Debian's headless Chromium (never a downloaded browser). Launch a run from the form,
see it in the runs table, open its page, see its FOSC chart drawn, save a screenshot.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
RUN = "browser-run"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
            return r.read().decode().strip() == "ok"
    except OSError:
        return False


def _kill_jobs(runs_dir: Path) -> None:
    """Training processes the dashboard started live in their own process groups: end them too."""
    for path in [*runs_dir.glob(".jobs/*.json"), *runs_dir.glob("*/job.json")]:
        try:
            os.killpg(int(json.loads(path.read_text())["pgid"]), signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass


@pytest.fixture
def dashboard(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium); never a downloaded browser")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e .[test])")
    runs_dir, port = tmp_path / "runs", _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "streamlit.log", "wb")
    # Started from another folder on purpose: run_dashboard.py must work from any working directory.
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "run_dashboard.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--", "--runs-dir", str(runs_dir)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env=dict(os.environ, FOSC_RUNS_DIR="/nonexistent-the-flag-wins"))
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()
            assert time.monotonic() < deadline, "streamlit did not answer /_stcore/health"
            time.sleep(0.5)
        yield url, runs_dir
    finally:
        _kill_jobs(runs_dir)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script has finished and the page stopped changing (elements land ~200 ms late)."""
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]'
                           '[data-test-connection-state="CONNECTED"]', timeout=timeout_ms)
    before = None
    for _ in range(20):
        now = page.content()
        if now == before:
            return
        before = now
        page.wait_for_timeout(300)


def test_launch_from_the_form_then_watch_its_fosc_chart(dashboard):
    from playwright.sync_api import sync_playwright

    url, runs_dir = dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-extensions", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url)
            _settle(page)
            assert "No runs in" in page.inner_text('[data-testid="stAlert"]')  # the empty state
            assert str(runs_dir) in page.inner_text('[data-testid="stSidebar"]')  # the --runs-dir flag won

            page.get_by_label("Name").fill(RUN)
            page.get_by_label("epochs").fill("1")
            page.get_by_text("Size (for a quick try)").click()
            for label, value in (("n-train", "256"), ("held-out", "64"), ("eval-n", "64")):
                page.get_by_label(label, exact=True).fill(value)
            page.get_by_text("evaluate at the end").click()
            page.get_by_role("button", name="Start run").click()
            _settle(page)
            assert f"started {RUN}" in page.inner_text('[data-testid="stMain"]'), page.inner_text('[data-testid="stMain"]')

            # The runs table refreshes by itself (every 5 s) and lists the run once its trainer made its folder.
            # (The grid draws on a canvas; its accessible copy holds the cells' text.)
            page.wait_for_function(
                "name => [...document.querySelectorAll('[data-testid=\"stDataFrame\"]')]"
                ".some(e => e.textContent.includes(name))", arg=RUN, timeout=180_000)
            _settle(page)
            assert (runs_dir / RUN / "job.json").is_file() or (runs_dir / ".jobs" / f"{RUN}.json").is_file()

            page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=re.compile(r"^\s*Run\s*$")).click()
            _settle(page)
            chart = page.locator('[data-testid="stPlotlyChart"]', has=page.locator(".js-plotly-plot .main-svg"))
            chart.first.wait_for(timeout=240_000)  # rows land at the epoch's end; the page refreshes by itself
            _settle(page)
            text = page.inner_text('[data-testid="stMain"]')
            assert RUN in text and "FOSC density" in text
            page.set_viewport_size({"width": 1400, "height": 2600})  # Streamlit scrolls inside a div
            _settle(page)
            page.screenshot(path=str(ARTIFACTS / "dashboard-run-page.png"))
            assert not page.locator('[data-testid="stException"]').count()
        finally:
            browser.close()
    assert not errors, errors
