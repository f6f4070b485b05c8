"""User SQL is bounded in time, rows and memory, and one runaway query holds up no other (issue 14)."""
from __future__ import annotations

import resource
import threading
import time
from pathlib import Path

import duckdb
import pytest
from streamlit.testing.v1 import AppTest

import store
from store import runs
from store import sql as store_sql
from store.reader import QueryTimeout, StoreConnection
from store.writer import RunWriter
from store_rows import BATCHES, ROWS, new_run, write_epoch

RUNAWAY = "SELECT count(*) AS n FROM range(1000000000000) t(x) WHERE x % 7 = 3"  # hours of work
APP = str(Path(__file__).resolve().parent.parent / "run_dashboard.py")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bounds") / "runs"
    new_run(root / "r")
    runs.write_json(root / "r" / runs.STATUS, {"state": "finished", "epoch": 1})
    w = RunWriter(root / "r", "r", flush_rows=ROWS * 4)
    write_epoch(w, 0)
    w.close()
    return root


def _in_thread(fn):
    out = {}

    def target():
        t0 = time.monotonic()
        try:
            out["value"] = fn()
        except BaseException as e:  # reported to the test thread
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, out


def test_a_runaway_query_is_interrupted_and_another_query_runs_meanwhile(folder):
    with store.open(folder, timeout_s=4) as con:
        th, out = _in_thread(lambda: store_sql.run_query(con, RUNAWAY))
        time.sleep(0.5)
        n = con.query_df("SELECT count(*) AS n FROM examples")["n"].item()
        # Still running: the other query did not wait for the runaway's lock or its end.
        assert th.is_alive(), "the runaway query ended before the other one returned"
        th.join(60)
    assert n == ROWS * BATCHES
    assert isinstance(out.get("error"), QueryTimeout) and "4 s" in str(out["error"])
    assert 3.9 < out["seconds"] < 12  # stopped at the bound (a loaded CI box adds a little), not hours later


def test_rows_are_cut_inside_the_query_not_after_fetching_them_all(folder):
    with store.open(folder) as con:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.monotonic()
        df = store_sql.run_query(con, "SELECT * FROM range(20000000)", max_rows=10_000)
        took = time.monotonic() - t0
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert len(df) == 10_000 and df.attrs["truncated"] and df["range"].tolist()[:3] == [0, 1, 2]
    assert took < 5 and grown_mb < 200  # 20M rows materialised take ~700 MB and many seconds
    with store.open(folder) as con:
        df = store_sql.run_query(con, "SELECT * FROM range(5) ORDER BY range DESC", max_rows=10)
    assert df["range"].tolist() == [4, 3, 2, 1, 0] and not df.attrs["truncated"]


def test_memory_is_bounded_and_the_user_cannot_lift_the_bound(folder):
    con = StoreConnection(folder, memory_limit="64MB", spill_limit="64MB")
    try:
        with pytest.raises(duckdb.OutOfMemoryException):
            store_sql.run_query(con, "SELECT x, count(*) FROM range(30000000) t(x) GROUP BY x ORDER BY 2 DESC, 1")
        with pytest.raises(store_sql.QueryRefused):
            store_sql.run_query(con, "SET memory_limit = '100GB'")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute("SET memory_limit = '100GB'")
        assert con.query_df("SELECT count(*) AS n FROM examples")["n"].item() == ROWS * BATCHES  # still fine
    finally:
        con.close()


def test_cli_timeout_is_one_line_and_exit_2(folder, capsys):
    t0 = time.monotonic()
    rc = store_sql.main(["--runs-dir", str(folder), "--timeout", "2", RUNAWAY])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and time.monotonic() - t0 < 10
    assert err.startswith("error: query stopped after 2 s") and err.count("\n") == 1
    rc = store_sql.main(["--runs-dir", str(folder), "--format", "csv", "--row-limit", "3", "SELECT * FROM range(10)"])
    out, err = capsys.readouterr()
    assert rc == 0 and out.splitlines() == ["range", "0", "1", "2"] and "cut at 3 rows" in err
    for bad in (["--timeout", "0"], ["--row-limit", "0"]):
        assert store_sql.main(["--runs-dir", str(folder), *bad, "SELECT 1"]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    assert store_sql.main(["--runs-dir", str(folder), "SELECT '\udcff'"]) == 2  # not UTF-8 (from a raw argv)
    assert "not UTF-8" in capsys.readouterr().err


def _page(folder, monkeypatch, page=None) -> AppTest:
    monkeypatch.setenv("FOSC_RUNS_DIR", str(folder))
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["runs_refresh"] = "off"
    at.run()
    if page:
        at.switch_page(f"dashboard/pages/{page}.py").run()
    return at


def test_a_runaway_on_the_sql_page_does_not_hold_up_another_sessions_page(folder, monkeypatch):
    from dashboard import queries

    monkeypatch.setattr(queries, "SQL_TIMEOUT_S", 8.0)
    sql_page = _page(folder, monkeypatch, "sql")
    sql_page.text_area(key="sql_text").input(RUNAWAY)
    th, out = _in_thread(lambda: sql_page.button(key="sql_run").click().run())
    time.sleep(1.0)
    other = _page(folder, monkeypatch)  # another browser tab: the Runs page
    # Rendered while the runaway still runs: it waited for neither a lock nor the runaway's end.
    assert th.is_alive(), "the runaway ended before the other page rendered"
    th.join(60)
    assert not other.exception and other.dataframe[0].value["run"].tolist() == ["r"]
    assert "error" not in out and not sql_page.exception
    assert sql_page.error and sql_page.error[0].value.startswith("query stopped after 8 s")
    assert 7.9 < out["seconds"] < 20
