"""The read-only SQL CLI and its two layers: the statement guard and DuckDB's own sandbox."""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import store
from store import sql

ROOT = Path(__file__).resolve().parent.parent
RUN = "tiny-dynamic"
LINKS_OUT = ("linked-run", f"{RUN}/evals/zz-link.parquet")  # what the views leave out, and the CLI names


@pytest.fixture(scope="module")
def runs_dir(tiny_runs, tmp_path_factory) -> Path:
    """A copy of one tiny run, plus symlinks that lead out of the runs folder, and a file outside."""
    base = tmp_path_factory.mktemp("sqlcase")
    runs_dir = base / "runs"
    shutil.copytree(tiny_runs / RUN, runs_dir / RUN)
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret\n")
    pq.write_table(pa.table({"x": [1, 2, 3]}), outside / "x.parquet")
    shutil.copytree(tiny_runs / RUN, outside / "far-run")
    os.symlink(outside, runs_dir / "escape")                      # a folder link out
    os.symlink(outside / "far-run", runs_dir / "linked-run")       # a whole run folder linked in
    os.symlink(outside / "x.parquet", runs_dir / RUN / "evals" / "zz-link.parquet")  # a table file linked in
    return runs_dir


@pytest.fixture()
def con(runs_dir):
    c = store.open(runs_dir)
    yield c
    c.close()


# ---- the guard ----------------------------------------------------------------------------------
REFUSED = [
    ("CREATE TABLE t AS SELECT 1", "CREATE"),
    ("CREATE MACRO m(a) AS a", "CREATE"),
    ("INSERT INTO examples VALUES (1)", "INSERT"),
    ("UPDATE examples SET fosc = 0", "UPDATE"),
    ("DELETE FROM examples", "DELETE"),
    ("DROP VIEW examples", "DROP"),
    ("ALTER VIEW examples RENAME TO e", "ALTER"),
    ("COPY (SELECT 1) TO 'out.csv'", "COPY"),
    ("COPY examples FROM 'in.csv'", "COPY"),
    ("ATTACH 'x.duckdb' AS x", "ATTACH"),
    ("DETACH memory", "DETACH"),
    ("INSTALL httpfs", "INSTALL"),
    ("LOAD httpfs", "LOAD"),
    ("SET threads = 1", "SET"),
    ("RESET threads", "RESET"),
    ("SET enable_external_access = true", "SET"),
    ("USE memory", "USE"),
    ("PRAGMA threads = 2", "PRAGMA"),
    ("PRAGMA enable_profiling", "enable_profiling"),
    ("EXPORT DATABASE 'dump'", "EXPORT"),
    ("IMPORT DATABASE 'dump'", "IMPORT"),
    ("CALL checkpoint()", "checkpoint"),
    ("CHECKPOINT", "checkpoint"),
    ("EXPLAIN CREATE TABLE t (a INT)", "EXPLAIN"),
    ("PREPARE p AS SELECT 1", "PREPARE"),
    ("BEGIN", "BEGIN"),
    ("VACUUM", "VACUUM"),
    ("UPDATE EXTENSIONS", "UPDATE EXTENSIONS"),
    ("SELECT 1; DROP VIEW examples", "DROP"),       # one writer among readers refuses the lot
    ("/* hi */ -- there\n INSERT INTO t VALUES (1)", "INSERT"),
]


@pytest.mark.parametrize("query,word", REFUSED)
def test_guard_refuses_what_is_not_a_read(query, word):
    with pytest.raises(sql.QueryRefused) as e:
        sql.check_query(query)
    msg = str(e.value)
    assert msg.startswith("refused: ") and word.lower() in msg.lower() and "\n" not in msg


ALLOWED = [
    "SELECT 1",
    "FROM examples LIMIT 1",
    "WITH a AS (SELECT 1 AS x) SELECT * FROM a",
    "SELECT 1; SELECT 2",
    "EXPLAIN SELECT count(*) FROM examples",
    "EXPLAIN ANALYZE SELECT 1",
    "DESCRIBE examples",
    "SHOW TABLES",
    "SUMMARIZE epochs",
    "PRAGMA version",
    "PRAGMA table_info('examples')",
    "CALL duckdb_settings()",
    "CALL pragma_version()",
]


@pytest.mark.parametrize("query", ALLOWED)
def test_guard_lets_reads_through(query):
    assert len(sql.check_query(query)) == query.count(";") + 1


def test_guard_empty_and_syntax_errors():
    with pytest.raises(sql.QueryRefused, match="no SQL statement"):
        sql.check_query("  -- nothing\n")
    with pytest.raises(duckdb.ParserException):
        sql.check_query("SELEC 1")


def test_run_query_runs_every_statement_and_returns_the_last(con):
    df = sql.run_query(con, "SELECT 1 AS a; SELECT count(*) AS n FROM examples")
    assert df.columns.tolist() == ["n"] and df["n"][0] == 768  # 2 epochs x 384 examples of the tiny run


# ---- the sandbox (each line of defence on its own: the raw connection, then run_query) ---------
def escapes(runs_dir: Path) -> list[str]:
    r = str(runs_dir.resolve())
    return [
        "SELECT * FROM read_csv('/etc/passwd')",
        f"SELECT * FROM read_parquet('{r}/../outside/x.parquet')",
        f"SELECT * FROM read_parquet('{r}/{RUN}/examples/epoch=000/../../../../outside/x.parquet')",
        f"SELECT * FROM read_parquet('{r}/*/../../outside/*.parquet')",          # glob escape
        f"SELECT * FROM read_parquet('{r[:-1]}*/../outside/x.parquet')",         # glob on the runs folder's name
        f"SELECT * FROM read_text('{r}/../outside/secret.txt')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM glob('{r}/../*')",
        f"SELECT * FROM read_text('{r}/escape/secret.txt')",                     # symlinked folder
        f"SELECT * FROM read_parquet('{r}/escape/x.parquet')",
        f"SELECT * FROM read_parquet('{r}/{RUN}/evals/zz-link.parquet')",        # symlinked file
        f"SELECT * FROM glob('{r}/escape/*')",
        f"SELECT * FROM read_parquet('{r}/linked-run/examples/*/*.parquet')",    # symlinked run folder
        "SELECT * FROM read_parquet('file:///etc/passwd')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM parquet_metadata('/etc/passwd')",
        "SELECT * FROM read_text('.tmp/anything')",  # DuckDB's default spill folder is not opened up
    ]


def test_sandbox_refuses_files_outside_the_runs_folder(con, runs_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").mkdir()
    (tmp_path / ".tmp" / "anything").write_text("x")
    for query in escapes(runs_dir):
        with pytest.raises(duckdb.PermissionException):  # the connection itself, no guard involved
            con.execute(query).fetchall()
        with pytest.raises(sql.QueryRefused, match="^refused: Permission Error"):
            sql.run_query(con, query)


def test_sandbox_settings_are_locked_and_extensions_off(con):
    for stmt in ("SET enable_external_access = true", "SET allowed_directories = ['/']",
                 "RESET lock_configuration", "SET lock_configuration = false", "SET temp_directory = '/'"):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.execute(stmt)
    for stmt in ("INSTALL httpfs", "LOAD httpfs"):
        with pytest.raises(duckdb.PermissionException):
            con.execute(stmt)


def test_files_inside_the_runs_folder_are_readable_and_links_out_are_left_out(con, runs_dir):
    r = runs_dir.resolve()
    raw = con.execute(f"SELECT count(*) FROM read_parquet('{r}/{RUN}/examples/*/*.parquet')").fetchone()[0]
    assert raw == sql.run_query(con, "SELECT count(*) AS n FROM examples")["n"][0] == 768
    # The symlinked run folder and the linked table file lead outside: left out (not even its
    # config.json is read) and named in ``skipped``, rather than failing every query.
    assert sorted(con.query_df("SELECT run FROM runs")["run"]) == [RUN]
    assert con.query_df("SELECT count(*) AS n FROM evals")["n"][0] == 10  # not the linked file's row
    assert sorted(Path(p).name for p in con.skipped) == ["linked-run", "zz-link.parquet"]
    assert all("outside the runs folder" in why for why in con.skipped.values())


# ---- the CLI ------------------------------------------------------------------------------------
def cli(capsys, *argv):
    rc = sql.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_table_csv_json(runs_dir, capsys):
    q = "SELECT epoch, count(*) AS n FROM examples GROUP BY epoch ORDER BY epoch"
    rc, out, err = cli(capsys, "--runs-dir", str(runs_dir), q)
    assert rc == 0  # the two links out of the folder are left out, and said so: one line each
    assert sorted(err.splitlines()) == [f"warning: left out {runs_dir.resolve() / p}: {why}" for p, why in zip(
        LINKS_OUT, ("run folder links outside the runs folder; left out", "links outside the runs folder; not read"))]
    lines = out.splitlines()
    assert lines[0].split() == ["epoch", "n"] and lines[1].split() == ["0", "384"] and lines[-1] == "(2 rows)"
    rc, out, _ = cli(capsys, "--runs-dir", str(runs_dir), "--format", "csv", q)
    assert rc == 0 and list(csv.reader(io.StringIO(out))) == [["epoch", "n"], ["0", "384"], ["1", "384"]]
    rc, out, _ = cli(capsys, "--runs-dir", str(runs_dir), "--format", "json",
                     "SELECT run, epoch, c_t FROM epochs ORDER BY epoch")
    assert rc == 0 and json.loads(out) == [{"run": RUN, "epoch": 0, "c_t": 0.5}, {"run": RUN, "epoch": 1, "c_t": 0.0}]


def test_cli_max_rows_and_env_default(runs_dir, capsys, monkeypatch):
    monkeypatch.setenv("FOSC_RUNS_DIR", str(runs_dir))
    rc, out, _ = cli(capsys, "--max-rows", "3", "SELECT idx FROM examples ORDER BY epoch, idx")
    assert rc == 0 and len(out.splitlines()) == 1 + 3 + 1 and "(768 rows, first 3 shown" in out


@pytest.mark.parametrize("query,needle", [
    ("DROP VIEW examples", "refused: DROP"),
    ("SELECT * FROM read_csv('/etc/passwd')", "refused: Permission Error"),
    ("SELECT nope FROM examples", "Binder Error"),
    ("SELEC 1", "Parser Error"),
])
def test_cli_bad_query_is_one_line_and_exit_2(runs_dir, capsys, query, needle):
    rc, out, err = cli(capsys, "--runs-dir", str(runs_dir), query)
    assert rc == 2 and out == ""
    error, *warnings = err.splitlines()
    assert error.startswith("error: ") and needle in error and len(warnings) == len(LINKS_OUT)
    assert all(w.startswith("warning: left out ") for w in warnings)


def test_cli_missing_runs_folder_is_not_created(tmp_path, capsys):
    rc, _, err = cli(capsys, "--runs-dir", str(tmp_path / "nope"), "SELECT 1")
    assert rc == 2 and "no runs folder" in err and not (tmp_path / "nope").exists()


def run_module(args, stdin=""):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "store.sql", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=120)


def test_module_refusal_has_no_traceback(runs_dir):
    p = run_module(["--runs-dir", str(runs_dir), f"COPY (SELECT 1) TO '{runs_dir}/x.csv'"])
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: refused: COPY") and p.stderr.count("\n") == 1 + len(LINKS_OUT)
    assert "Traceback" not in p.stderr
    assert not (runs_dir / "x.csv").exists()


def test_shell_reads_stdin_until_quit(runs_dir):
    script = (".tables\n"
              "SELECT count(*) AS n\n  FROM examples;\n"
              "SELECT nope;\n"                                   # an error: reported, the shell goes on
              "CREATE TABLE t AS SELECT 1;\n"
              "SELECT 40 + 2 AS answer; SELECT 'two' AS s;\n"
              ".quit\n"
              "SELECT 'after quit' AS never;\n")
    p = run_module(["--runs-dir", str(runs_dir), "--format", "csv"], stdin=script)
    assert p.returncode == 2  # something failed
    assert p.stdout.splitlines() == ["runs", "examples", "steps", "epochs", "evals", "events",
                                     "n", "768", "answer", "42", "s", "two"]
    errors = p.stderr.splitlines()
    assert len(errors) == 2 + len(LINKS_OUT) and "nope" in errors[0] and errors[1].startswith("error: refused: CREATE")


def test_shell_runs_a_last_statement_without_semicolon_and_exits_0(runs_dir):
    p = run_module(["--runs-dir", str(runs_dir), "--format", "json"], stdin="SELECT 1 AS one;\nSELECT 2 AS two")
    assert p.returncode == 0 and len(p.stderr.splitlines()) == len(LINKS_OUT)
    assert [json.loads(line) for line in p.stdout.splitlines()] == [[{"one": 1}], [{"two": 2}]]
