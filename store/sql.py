"""``python -m store.sql``: read-only SQL over a runs folder (``fosc-sql``), and the guard behind it.

    python -m store.sql "SELECT run, epoch, avg(fosc) FROM examples GROUP BY ALL ORDER BY ALL"
    python -m store.sql --format csv "SELECT * FROM epochs" > epochs.csv
    python -m store.sql                      # an interactive shell: statements end with ';'

Two layers keep user SQL read-only. ``check_query`` lets through only statements that read
(SELECT and its relatives, EXPLAIN of one, read-only PRAGMA and CALL); the connection from
``store.open`` is itself sandboxed (files only under the runs folder, no extensions, settings
locked), which is what stops ``read_csv('/etc/passwd')`` and its cousins. The dashboard's SQL page
calls ``run_query`` as this CLI does.

Every statement is bounded: interrupted after ``--timeout`` seconds, at most ``--row-limit`` rows
fetched (the LIMIT is put inside the query, so DuckDB never builds the rest), and DuckDB's memory
limit (``store.reader.MEMORY_LIMIT``, spilling to a private folder of bounded size).
"""
from __future__ import annotations

import argparse
import re
import sys
import threading
from pathlib import Path

import duckdb
import pandas as pd

from store import runs
from store.reader import TIMEOUT_S, VIEWS, open_store

ROW_LIMIT = 1_000_000  # rows one statement may return to the CLI (the dashboard shows 10,000)

# PRAGMAs and CALLs that only report (everything else can change settings or state).
READ_ONLY_PRAGMAS = frozenset({
    "version", "platform", "user_agent", "show", "show_tables", "show_tables_expanded", "show_databases",
    "table_info", "database_list", "database_size", "storage_info", "metadata_info", "functions",
    "collations",
})
_REASONS = {
    "COPY": "reads or writes files; query the views instead",
    "ATTACH": "attaching databases is not allowed; the runs folder's views are all there is",
    "DETACH": "detaching databases is not allowed",
    "LOAD": "installing or loading extensions is not allowed",
    "SET": "settings are locked (SET, RESET, USE and PRAGMA x = y change them)",
    "EXPORT": "writes files",
    "PREPARE": "prepared statements are not allowed; write the query out",
    "EXECUTE": "prepared statements are not allowed; write the query out",
    "MULTI": "this statement runs hidden extra statements (PIVOT without an IN list?); spell it out",
}
_WRITES = {"CREATE", "INSERT", "UPDATE", "DELETE", "DROP", "ALTER", "MERGE_INTO", "VACUUM", "ANALYZE", "CREATE_FUNC"}
_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.S)
_EXPLAIN = re.compile(r"^explain\b\s*(?:analy[sz]e\b\s*)?(?:\([^)]*\)\s*)?", re.I)

_parser = duckdb.connect(":memory:")  # parsing only: never runs a user statement
_parser_lock = threading.Lock()


class QueryRefused(ValueError):
    """A statement that could write, escape the runs folder or change settings; one-line message."""


def _head(text: str) -> str:
    """The statement without its leading comments."""
    return text[_COMMENTS.match(text).end():]


def _first_word(text: str) -> str:
    m = re.match(r"\w+", _head(text))
    return m.group(0).upper() if m else "?"


def _statements(sql: str) -> list:
    with _parser_lock:
        return _parser.extract_statements(sql)


def _kind(stmt) -> str | None:
    try:
        return stmt.type.name
    except ValueError:  # a statement type the Python API cannot name (e.g. UPDATE EXTENSIONS)
        return None


def _check_one(stmt) -> None:
    word = _first_word(stmt.query)
    kind = _kind(stmt)
    if kind is None:
        words = " ".join(_head(stmt.query).split()[:2]).upper()
        raise QueryRefused(f"refused: {words} is not a read-only statement")
    if kind == "SELECT":
        return
    if kind == "EXPLAIN":
        inner = _EXPLAIN.sub("", _head(stmt.query), count=1)
        inside = _statements(inner)
        if len(inside) == 1 and _kind(inside[0]) == "SELECT":
            return
        raise QueryRefused("refused: EXPLAIN only of a SELECT")
    if kind == "PRAGMA" and word == "PRAGMA":
        name = re.match(r"pragma\s+(\w+)", _head(stmt.query), re.I)
        if name and name.group(1).lower() in READ_ONLY_PRAGMAS:
            return
        raise QueryRefused(f"refused: PRAGMA {name.group(1) if name else ''} is not read-only; "
                           f"allowed: {', '.join(sorted(READ_ONLY_PRAGMAS))}")
    if kind == "CALL":
        name = re.match(r"call\s+(\w+)", _head(stmt.query), re.I)
        fn = name.group(1).lower() if name else ""
        if fn.startswith("duckdb_") or (fn.startswith("pragma_") and fn[len("pragma_"):] in READ_ONLY_PRAGMAS):
            return
        raise QueryRefused(f"refused: CALL {fn or word} is not a read-only function")
    if kind in _WRITES:
        raise QueryRefused(f"refused: {word} writes; this SQL is read-only (SELECT, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE)")
    reason = _REASONS.get(kind, "only SELECT, EXPLAIN, DESCRIBE, SHOW, SUMMARIZE and read-only PRAGMA/CALL run here")
    raise QueryRefused(f"refused: {word}: {reason}")


def check_query(sql: str) -> list[str]:
    """The statements of ``sql`` if every one only reads; else QueryRefused (nothing runs).

    A syntax error raises duckdb.ParserException, as DuckDB words it.
    """
    stmts = _statements(sql)
    if not stmts:
        raise QueryRefused("no SQL statement to run")
    for stmt in stmts:
        _check_one(stmt)
    return [s.query for s in stmts]


def iter_results(con, sql: str, timeout_s: float | None = None, max_rows: int = ROW_LIMIT):
    """Check all of ``sql`` first, then run its statements on ``con`` (a store connection), each
    bounded in time (``timeout_s``; None: the connection's own bound) and rows, yielding each result
    (``df.attrs['truncated']``: rows were cut)."""
    for text in check_query(sql):
        try:
            yield con.query_df(text, timeout_s=timeout_s, max_rows=max_rows)
        except duckdb.PermissionException as e:
            raise QueryRefused(f"refused: {one_line(e)} (only files under the runs folder can be read)") from None


def run_query(con, sql: str, timeout_s: float | None = None, max_rows: int = ROW_LIMIT) -> pd.DataFrame:
    """Check ``sql``, run its statements on ``con`` (a store connection), return the last result.

    Raises QueryRefused (a statement that is not a read, or a file outside the runs folder),
    store.reader.QueryTimeout (past ``timeout_s``) or duckdb.Error (syntax, unknown column, out of
    memory...); ``one_line(exc)`` words each for users.
    """
    df = None
    for df in iter_results(con, sql, timeout_s, max_rows):
        pass
    return df


def one_line(exc: BaseException) -> str:
    """An exception as one line for users (DuckDB errors carry a multi-line caret diagram)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- output -------------------------------------------------------------------------------------
def render(df: pd.DataFrame, fmt: str, max_rows: int = 0) -> str:
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", force_ascii=False) + "\n"
    n = len(df)
    shown = df.head(max_rows) if max_rows and n > max_rows else df
    if n == 0:
        body = "  ".join(map(str, df.columns))
    else:
        body = shown.to_string(index=False)
    more = f", first {len(shown)} shown; --max-rows 0 shows all" if len(shown) < n else ""
    cut = " fetched, more not (--row-limit)" if df.attrs.get("truncated") else ""
    return f"{body}\n({n} row{'s' if n != 1 else ''}{cut}{more})\n"


# ---- the shell ----------------------------------------------------------------------------------
HELP = """End each statement with ';'. Views: {views}.
  .tables        list the views      DESCRIBE examples;   their columns
  .help          this text           .quit / .exit / EOF  leave"""


def _read_line(interactive: bool, continuing: bool) -> str | None:
    """The next input line, or None at EOF; a prompt only on a terminal."""
    if not interactive:
        return sys.stdin.readline() or None
    try:
        return input("  ...> " if continuing else "fosc> ") + "\n"
    except EOFError:
        print()
        return None


def shell(con, fmt: str, max_rows: int, interactive: bool, bounds: tuple[float, int] = (TIMEOUT_S, ROW_LIMIT)) -> int:
    """Read statements until EOF or .quit; a failing one prints its error and the shell goes on.

    Returns 2 if any statement failed (so a script piped in can be checked), else 0.
    """
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        print(f"FOSC Lab SQL over {con.runs_dir} (read-only). " + HELP.format(views=", ".join(VIEWS)))
    failed, buf = False, ""
    while True:
        try:
            line = _read_line(interactive, bool(buf.strip()))
        except KeyboardInterrupt:  # drop the statement being typed, as other SQL shells do
            print("^C", file=sys.stderr)
            buf = ""
            continue
        except UnicodeDecodeError:
            print("error: the input is not UTF-8 text; statement dropped", file=sys.stderr)
            failed, buf = True, ""
            continue
        if line is None:
            break
        stripped = line.strip()
        if not buf.strip() and stripped.startswith("."):
            cmd = stripped.split()[0].lower()
            if cmd in (".quit", ".exit", ".q"):
                break
            if cmd in (".tables", ".help"):
                print("\n".join(VIEWS) if cmd == ".tables" else HELP.format(views=", ".join(VIEWS)))
            else:
                print(f"error: unknown command {cmd} (.tables, .help, .quit)", file=sys.stderr)
                failed = True
            continue
        buf += line
        if stripped.endswith(";"):
            failed |= not _run_and_print(con, buf, fmt, max_rows, bounds)
            buf = ""
    if buf.strip():  # a last statement without its ';'
        failed |= not _run_and_print(con, buf, fmt, max_rows, bounds)
    return 2 if failed else 0


def _run_and_print(con, sql: str, fmt: str, max_rows: int, bounds: tuple[float, int] = (TIMEOUT_S, ROW_LIMIT)) -> bool:
    try:
        for df in iter_results(con, sql, *bounds):
            sys.stdout.write(render(df, fmt, max_rows))
            sys.stdout.flush()
            if df.attrs.get("truncated") and fmt != "table":
                print(f"warning: output cut at {len(df):,} rows (--row-limit)", file=sys.stderr)
    except (QueryRefused, runs.StoreError, duckdb.Error) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return False
    return True


# ---- CLI ----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fosc-sql", description="Read-only SQL over a FOSC Lab runs folder "
                                f"(views: {', '.join(VIEWS)}). Without a query: an interactive shell.")
    p.add_argument("query", nargs="?", help="SQL to run (several statements separated by ';' are fine)")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help=f"the runs folder (default: ${runs.RUNS_DIR_ENV} or ./runs)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--max-rows", type=int, default=200, help="rows a table shows (0: all; csv/json: always all)")
    p.add_argument("--row-limit", type=int, default=ROW_LIMIT,
                   help=f"rows a statement may return at most (default {ROW_LIMIT:,}); the rest is not computed")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S,
                   help=f"seconds a statement may run before it is interrupted (default {TIMEOUT_S:g})")
    return p


def _warn_skipped(con, shown: int = 5) -> None:
    """Files left out of the views (damaged, foreign, links out): say so, or a count is silently short."""
    items = sorted(con.skipped.items())
    for path, why in items[:shown]:
        print(f"warning: left out {path}: {why}", file=sys.stderr)
    if len(items) > shown:
        print(f"warning: and {len(items) - shown} more files left out", file=sys.stderr)


def _bad_bounds(ns) -> str | None:
    if not 0 < ns.timeout <= 24 * 3600:
        return f"--timeout must be between 0 and 86400 seconds, got {ns.timeout:g}"
    if ns.row_limit < 1:
        return f"--row-limit must be at least 1, got {ns.row_limit}"
    if ns.query is not None:
        try:
            ns.query.encode("utf-8")
        except UnicodeEncodeError:
            return "the query is not UTF-8 text"
    return None


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    runs_dir = ns.runs_dir if ns.runs_dir is not None else runs.default_runs_dir()
    if (bad := _bad_bounds(ns)) is not None:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    if not runs_dir.is_dir():
        print(f"error: no runs folder at {runs_dir} (use --runs-dir or set ${runs.RUNS_DIR_ENV})", file=sys.stderr)
        return 2
    bounds = (ns.timeout, ns.row_limit)
    try:
        with open_store(runs_dir) as con:
            if ns.query is None:
                rc = shell(con, ns.format, ns.max_rows, sys.stdin.isatty(), bounds)
            else:
                rc = 0 if _run_and_print(con, ns.query, ns.format, ns.max_rows, bounds) else 2
            _warn_skipped(con)
            return rc
    except BrokenPipeError:  # `... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    except (duckdb.Error, runs.StoreError, OSError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
