"""The Examples page in a real browser (Debian's Chromium via Playwright): click a bin of the data map
and see its examples, click a Fig. 1a bin and see that bin's examples, click an image's button and land
on its history."""
from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_run
from tests.test_browser import (ARTIFACTS, CHROMIUM, ROOT, _free_port, _healthy, _settle, browser_page,
                                stop_server)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
RUN = "ins-browser"


@pytest.fixture
def app(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium); never a downloaded browser")
    pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e .[test])")
    runs_dir = tmp_path / "runs"
    tiny_run(runs_dir, RUN, "unsecured", epochs=3, eval_at_end=False)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "run_dashboard.py"), "--server.headless", "true",
         "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
         "--", "--runs-dir", str(runs_dir)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "streamlit.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        stop_server(proc, log)


def _chart(page, title: str):
    chart = page.locator('[data-testid="stPlotlyChart"]', has=page.get_by_text(title))
    chart.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
    return chart


def test_from_a_bin_to_its_examples_and_from_an_image_to_its_history(app):
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(1500, 2400) as (page, errors):
        page.goto(app)
        _settle(page)
        page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=re.compile(r"^\s*Examples\s*$")).click()
        _settle(page)
        main = page.locator('[data-testid="stMain"]')

        # a density bin of the data map -> the examples inside it
        dm = _chart(page, "Data map")
        dm.locator("path.point").first.click(force=True)
        _settle(page)
        assert "in the clicked data-map bin" in main.inner_text()
        n_bin = int(re.search(r"\((\d+) examples\)", main.inner_text()).group(1))
        want = min(n_bin, 16)
        for _ in range(50):  # the previous grid's images leave the page a moment after the new text lands
            if page.locator('[data-testid="stImage"]').count() == want:
                break
            page.wait_for_timeout(200)
        assert page.locator('[data-testid="stImage"]').count() == want

        # an image -> its history
        first = page.get_by_role("button", name=re.compile(r"^history of #\d+$")).first
        idx = re.search(r"#(\d+)", first.inner_text()).group(1)
        first.click()
        _settle(page)
        assert f"#{idx} of {RUN}" in main.inner_text()
        _chart(page, f"Example {idx} of {RUN}, epoch by epoch")
        assert f"idx={idx}" in page.url and f"run={RUN}" in page.url
        page.screenshot(path=str(ARTIFACTS / "insight-example.png"))

        # a Fig. 1a bin -> that bin's examples
        page.get_by_role("button", name="Back to the examples").click()
        _settle(page)
        bars = _chart(page, "Fig. 1a")
        bars.locator(".bars path, .point path").first.click(force=True)
        _settle(page)
        assert re.search(r"Examples of epoch \d+ with FOSC in \[", main.inner_text())
        assert page.locator('[data-testid="stImage"]').count() > 0
        page.screenshot(path=str(ARTIFACTS / "insight-examples.png"))
    assert not errors, errors
