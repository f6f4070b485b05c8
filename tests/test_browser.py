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
from contextlib import contextmanager
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
    yield from _serve(tmp_path, tmp_path / "runs")


def _serve(tmp_path: Path, runs_dir: Path):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium); never a downloaded browser")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e .[test])")
    port = _free_port()
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
        stop_server(proc, log)


def stop_server(proc: subprocess.Popen, log) -> None:
    """End the Streamlit server's process group: SIGTERM, then SIGKILL after 15 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


def launch_chromium(p):
    """Debian's Chromium, headless, with the flags this closed network needs (see the browser notes)."""
    return p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
        "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
        "--disable-extensions", "--no-first-run"])


@contextmanager
def browser_page(width: int, height: int):
    """A page of Debian's Chromium at this viewport and the page errors it raised (each test asserts
    there were none, after the browser is closed)."""
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, errors
        finally:
            browser.close()


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
    url, runs_dir = dashboard
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(1400, 1000) as (page, errors):
        page.goto(url)
        _settle(page)
        assert "No runs in" in page.inner_text('[data-testid="stAlert"]')  # the empty state
        assert str(runs_dir) in page.inner_text('[data-testid="stSidebar"]')  # the --runs-dir flag won

        page.get_by_label("Name").fill(RUN)
        # Enough epochs that it is surely still training when Stop is tried (a fast machine ran
        # 2 epochs of 256 digits before the button was reached); the test stops it at the end.
        page.get_by_label("epochs").fill("200")
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
        page.wait_for_timeout(6_000)  # one more refresh of the live table: the feedback is still there
        _settle(page)
        assert f"started {RUN}" in _main(page), _main(page)

        # Stop asks first, and Cancel leaves the run alone (it is still training: 200 epochs).
        page.get_by_role("button", name="Stop this run...").click()
        _settle(page)
        assert f"Stop {RUN}?" in _main(page)
        page.get_by_role("button", name="Cancel").click()
        _settle(page)
        assert f"Stop {RUN}?" not in _main(page) and page.get_by_role("button", name="Stop this run...").count()

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

        # Back on Runs, Stop for real: the trainer ends its batch, saves and is marked stopped.
        page.set_viewport_size({"width": 1400, "height": 1000})
        _nav(page, "Runs")
        page.get_by_role("button", name="Stop this run...").click()
        _settle(page)
        page.get_by_role("button", name="Yes, stop it").click()
        _settle(page)
        assert f"{RUN} stopped" in _main(page), _main(page)
        from store import runs as store_runs
        assert store_runs.read_status(runs_dir / RUN)["state"] == "stopped"
    assert not errors, errors


# ---- issue 15: one browser session over prepared tiny runs ----------------------------------------------

DOCS = ROOT / "docs"
CLIPPED_JS = """() => [...document.querySelectorAll('[data-testid="stMain"] *, [data-testid="stSidebar"] *')]
    .filter(e => e.children.length === 0 && e.textContent.trim() && !e.closest('svg, canvas, [data-testid="stDataFrame"]')
                 && !e.closest('[data-testid="stCode"], [data-testid="stExpanderDetails"]'))
    .filter(e => { const s = getComputedStyle(e);
                   return (s.overflow !== 'visible' || s.textOverflow === 'ellipsis') && e.scrollWidth > e.clientWidth + 1; })
    .map(e => e.textContent.trim().slice(0, 40))"""


def _chart(page, title: str):
    return page.locator('[data-testid="stPlotlyChart"]', has=page.locator(".js-plotly-plot .main-svg")).filter(
        has_text=title).first


def _traces(chart) -> list[list]:
    return chart.evaluate("el => el.querySelector('.js-plotly-plot').data.map(t => [t.name, (t.line || {}).color])")


def _xrange(chart) -> list[float]:
    return chart.evaluate("el => el.querySelector('.js-plotly-plot')._fullLayout.xaxis.range.map(Number)")


def _goto(page, url: str) -> None:
    page.goto(url)
    _settle(page)


def _nav(page, title: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=re.compile(rf"^\s*{title}\s*$")).click()
    _settle(page)


def _main(page) -> str:
    return page.inner_text('[data-testid="stMain"]')


@pytest.fixture
def prepared(tiny_runs, tmp_path):
    """The session's three tiny runs, tiny-standard's evaluation cut short after PGD-10 (partial)."""
    import shutil

    from store import files

    runs_dir = tmp_path / "runs"
    shutil.copytree(tiny_runs, runs_dir)
    for attack in ("pgd20", "cw"):
        files.eval_path(runs_dir / "tiny-standard", "last", "white-box", attack).unlink()
    yield from _serve(tmp_path, runs_dir)


def _shot(page, name: str, height: int = 2400) -> None:
    page.set_viewport_size({"width": 1400, "height": height})  # Streamlit scrolls inside a div
    _settle(page)
    page.screenshot(path=str(DOCS / name))


def test_the_dashboard_a_researcher_uses(prepared):
    """Deep links, the headline with its sources, a partial evaluation marked, config columns and a
    filter, no clipped control at 1280x800, fixed run colours, and zoom kept while a new epoch arrives."""

    url, runs_dir = prepared
    with browser_page(1280, 800) as (page, errors):

        # Runs: config columns, the headline's sources, the partial evaluation, a filter; nothing clipped.
        _goto(page, url)
        assert not page.locator('[data-testid="stAppDeployButton"]').count()  # no Deploy button
        text = _grid_text(page, "tiny-dynamic")
        for header in ("held-out PGD trend", "step size", "c_max", "data size", "ETA"):
            assert header in text, header
        assert "PGD-10 (eps/4), eps 0.3, n=128 (partial: no PGD-20 (eps/4))" in text  # tiny-standard's cut-short evaluation
        assert not page.evaluate(CLIPPED_JS), page.evaluate(CLIPPED_JS)
        page.get_by_label("Search run, tag or note").fill("unsecured")
        page.keyboard.press("Enter")
        _settle(page)
        text = page.locator('[data-testid="stDataFrame"]').filter(has_text="tiny-unsecured").first.text_content()
        assert "tiny-dynamic" not in text and "1 of 3 runs" in _main(page)
        _shot(page, "dashboard-runs.png", 1600)

        # Compare through a deep link; each run keeps its colour whatever else is chosen.
        page.set_viewport_size({"width": 1280, "height": 800})
        _goto(page, url + "/?runs=tiny-dynamic,tiny-standard")
        assert "Compare runs" in _main(page)
        first = dict(_traces(_chart(page, "held-out PGD accuracy")))
        assert set(first) == {"tiny-dynamic", "tiny-standard"}
        assert not page.evaluate(CLIPPED_JS), page.evaluate(CLIPPED_JS)
        _goto(page, url + "/?runs=tiny-unsecured,tiny-dynamic")
        second = dict(_traces(_chart(page, "held-out PGD accuracy")))
        assert second["tiny-dynamic"] == first["tiny-dynamic"] and len(set(second.values())) == 2
        assert "partial: no PGD-20 (eps/4), CW-inf-30 (eps/4)" not in _main(page)  # tiny-standard is not chosen now
        _shot(page, "dashboard-compare.png", 2200)

        # The Run page through ?run=: the named run, not the newest; nothing clipped at 1280x800.
        page.set_viewport_size({"width": 1280, "height": 800})
        _goto(page, url + "/?run=tiny-standard")
        assert "tiny-standard: standard on mnist-demo" in _main(page)
        assert "test PGD (partial)" in _main(page)
        assert not page.evaluate(CLIPPED_JS), page.evaluate(CLIPPED_JS)
        _goto(page, url + "/?run=tiny-dynamic")
        assert "tiny-dynamic: dynamic on mnist-demo" in _main(page)
        _chart(page, "FOSC density").wait_for(timeout=60_000)

        # Zoom into the density and the schedule; auto-refreshes (every 5 s) keep the zoom.
        zoomed = {}
        for title in ("FOSC density", "FOSC vs the schedule c_t"):
            zoomed[title] = _drag_zoom(page, _chart(page, title))
        assert zoomed["FOSC density"] != _full_range(page, "FOSC density")
        page.wait_for_timeout(11_000)  # two refreshes of the live fragment
        _settle(page)
        for title, rng in zoomed.items():
            assert _xrange(_chart(page, title)) == pytest.approx(rng), title  # the user's zoom survived
        # A new epoch arrives (a real resume): the page follows it by itself (that the zoom also
        # survives new data is tests/test_browser_zoom.py).
        before = [n for n, _ in _traces(_chart(page, "FOSC density"))]
        resume_to_a_third_epoch(page, runs_dir, "tiny-dynamic")
        _settle(page)
        after = [n for n, _ in _traces(_chart(page, "FOSC density"))]
        assert before == ["epoch 0", "epoch 1"] and after == ["epoch 0", "epoch 1", "epoch 2"]
        assert "3/3 epochs done" in _main(page)
        _shot(page, "dashboard-run.png", 3400)
        page.emulate_media(color_scheme="dark")
        _goto(page, url + "/?run=tiny-dynamic")
        page.set_viewport_size({"width": 1400, "height": 3400})
        _chart(page, "Trajectories").wait_for(timeout=60_000)  # the last chart drawn: not a skeleton
        _shot(page, "dashboard-run-dark.png", 3400)

        # SQL: Ctrl+Enter runs the query.
        page.set_viewport_size({"width": 1280, "height": 800})
        page.emulate_media(color_scheme="light")
        _nav(page, "SQL")
        assert not page.evaluate(CLIPPED_JS), page.evaluate(CLIPPED_JS)
        area = page.get_by_role("textbox", name="Query")
        area.fill("SELECT run, count(*) AS n FROM epochs GROUP BY run ORDER BY run")
        area.press("Control+Enter")
        _settle(page)
        assert "tiny-dynamic" in page.locator('[data-testid="stDataFrame"]').first.text_content()
        assert not page.locator('[data-testid="stException"]').count()
    assert not errors, errors


def _grid_text(page, has: str) -> str:
    """The text of a table: the grid draws on a canvas and keeps an accessible copy of the cells in
    view only, so scroll it across and collect every part."""
    grid = page.locator('[data-testid="stDataFrame"]').filter(has_text=has).first
    scroller = grid.locator(".dvn-scroller").first
    width = scroller.evaluate("e => e.scrollWidth")
    parts = []
    for x in range(0, width + 1, 300):
        scroller.evaluate(f"e => e.scrollLeft = {x}")
        page.wait_for_timeout(500)  # the grid redraws (and updates its accessible copy) after a scroll
        parts.append(grid.text_content())
    scroller.evaluate("e => e.scrollLeft = 0")
    return " ".join(parts)


def resume_to_a_third_epoch(page, runs_dir: Path, run: str) -> None:
    """New data, as a live run brings it: a real resume trains epoch 2 of ``run`` while the page
    refreshes by itself; returns once the page draws epoch 2's density."""
    resume = subprocess.run(
        [sys.executable, "-m", "trainer.run", "--resume", run, "--runs-dir", str(runs_dir), "--epochs", "3",
         "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=600,
        env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    assert resume.returncode == 0, resume.stderr[-2000:]
    page.wait_for_function(
        "() => [...document.querySelectorAll('.js-plotly-plot')].some(g => (g.data || [])"
        ".some(t => t.name === 'epoch 2'))", timeout=120_000)


def _drag_zoom(page, chart) -> list[float]:
    """Zoom the x axis by dragging across 30-60 % of the plot area, like a user."""
    chart.scroll_into_view_if_needed()
    box = chart.locator(".nsewdrag").first.bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, y, steps=8)
    page.mouse.up()
    page.wait_for_timeout(500)
    return _xrange(chart)


def _full_range(page, title: str) -> list[float]:
    """The chart's x range with autorange, from its data (what a double click would show)."""
    return _chart(page, title).evaluate(
        # _fullData: the decoded arrays (a live chart's data holds them base64-encoded, as Plotly's JSON does)
        "el => { const d = el.querySelector('.js-plotly-plot')._fullData.flatMap(t => Array.from(t.x || []).map(Number));"
        " return [Math.min(...d), Math.max(...d)]; }")
