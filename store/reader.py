"""``store.open(runs_dir)``: a DuckDB connection with one view per table over every run.

Views are built from an explicit snapshot of the files (see :mod:`store.files`), so a live writer's
compaction never shows a row twice. ``refresh()`` takes a new snapshot; ``query_df`` retries
with a fresh snapshot if a listed chunk vanished (compacted away) before DuckDB opened it.

Every file of a runs folder is untrusted input (see :mod:`store.checked`): links out of the folder,
damaged or foreign files are left out of the views and listed in ``skipped``, so one bad file
affects only itself. With ``sandbox=True`` (the default) the connection can read only inside the
runs directory and its configuration is locked, so user SQL cannot reach other files. Every query
of ``query_df`` runs on its own cursor, bounded in time (interrupted), memory and rows, so one
runaway query neither holds up another thread's query nor keeps a core busy.
"""
from __future__ import annotations

import json
import re
import tempfile
import threading
from pathlib import Path
from typing import Callable

import duckdb
import pandas as pd
import pyarrow as pa

from store import annotations, checked, files, runs
from store.schema import PARTITION_COLUMNS, PARTITIONED, TABLES, duckdb_type, table_schema

VIEWS = ("runs", "examples", "steps", "epochs", "evals", "events")
TIMEOUT_S = 60.0         # a query running longer is interrupted (dashboard SQL page and CLI: their own bound)
MEMORY_LIMIT = "2GB"     # DuckDB's working memory; beyond it, it spills to a private folder of at most:
SPILL_LIMIT = "4GB"
# How DuckDB names the file it could not read: File '...', file '...', file "..."; any case.
_NAMED_FILE = re.compile(r"""file ['"]([^'"]+)['"]""", re.I)
_FILE_WORDS = re.compile(r"parquet|corrupt|decompress|zstd|snappy|thrift|magic bytes|too small", re.I)
_NOT_FILE_ERRORS = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                    duckdb.PermissionException, duckdb.InterruptException, duckdb.OutOfMemoryException)

RUNS_COLUMNS = pa.schema([
    ("run", pa.string()), ("strategy", pa.string()), ("dataset", pa.string()), ("model", pa.string()),
    ("eps", pa.float64()), ("epochs", pa.int32()), ("state", pa.string()), ("epoch", pa.int32()),
    ("created_at", pa.string()), ("updated_at", pa.string()), ("git_commit", pa.string()),
    ("code_hash", pa.string()), ("message", pa.string()), ("config", pa.string()),
    ("tags", pa.list_(pa.string())), ("note", pa.string()),  # store.annotations: the user's words
])


class QueryTimeout(runs.StoreError):
    """A query ran past its time bound and was interrupted; the message is one line for users."""


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def run_folders(runs_dir: Path, problems: dict[str, str] | None = None) -> list[Path]:
    """The run folders whose real path is inside ``runs_dir``; a link out is left out (and noted)."""
    root = Path(runs_dir).resolve()
    out = []
    for rd in runs.list_runs(runs_dir):
        if rd.resolve().is_relative_to(root):
            out.append(rd)
        elif problems is not None:
            problems[str(rd)] = "run folder links outside the runs folder; left out"
    return out


def _read_run_json(path: Path, problems: dict[str, str] | None) -> tuple[dict, bool]:
    """(the file's object, True) or ({}, False) for a damaged one, whose reason goes to ``problems``."""
    try:
        obj = runs.read_json(path, {})
    except runs.StoreError as e:
        if problems is not None:
            problems[str(path)] = str(e).removeprefix(f"{path}: ")
        return {}, False
    return (obj if isinstance(obj, dict) else {}), True


def runs_table(runs_dir: Path, problems: dict[str, str] | None = None) -> pa.Table:
    """One row per run folder from its JSON files (config, meta, status): cheap, always current.

    A run whose config.json cannot be read is left out; a damaged meta.json or status.json leaves
    its own columns NULL. Either way ``problems`` gets the file and the reason.
    """
    rows = {f.name: [] for f in RUNS_COLUMNS}
    for rd in run_folders(runs_dir, problems):
        cfg, ok = _read_run_json(rd / runs.CONFIG, problems)
        if not ok:
            continue
        meta, _ = _read_run_json(rd / runs.META, problems)
        status, status_ok = _read_run_json(rd / runs.STATUS, problems)
        vals = {
            "run": rd.name, "strategy": cfg.get("strategy"), "dataset": cfg.get("dataset"),
            "model": cfg.get("model"), "eps": cfg.get("eps"), "epochs": cfg.get("epochs"),
            "state": runs.effective_state(rd) if status_ok else None, "epoch": status.get("epoch"),
            "created_at": meta.get("created_at"), "updated_at": status.get("updated_at"),
            "git_commit": meta.get("git_commit"), "code_hash": meta.get("code_hash"),
            "message": status.get("message"), "config": json.dumps(cfg, sort_keys=True),
            **annotations.read(rd),
        }
        for f in RUNS_COLUMNS:
            rows[f.name].append(_cell(vals[f.name], f.type))
    return pa.Table.from_pydict(rows, schema=RUNS_COLUMNS)


def _cell(value, t: pa.DataType):
    """``value`` as type ``t``, or NULL: one hand-edited JSON file must not break every query."""
    try:
        return pa.scalar(value, t).as_py()
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None


def empty_sql(name: str) -> str:
    """A typed, empty relation with ``name``'s view columns (a table with no files yet)."""
    cols = ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in table_schema(name))
    return f"(SELECT {cols} WHERE false)"


def relation_sql(name: str, checked_files: list[tuple[str, frozenset[str]]]) -> str:
    """A parenthesised SQL relation over these checked (path, columns it has) files of table
    ``name``, with the view's columns; a column a file lacks (NEWER_COLUMNS, older runs) is NULL."""
    if not checked_files:
        return empty_sql(name)
    schema = table_schema(name)
    hive = "true, hive_types = {'epoch': 'INTEGER'}" if name in PARTITIONED else "false"
    by_layout: dict[frozenset[str], list[str]] = {}
    for path, have in checked_files:
        by_layout.setdefault(have, []).append(path)
    parts = []
    # One read_parquet per layout (nearly always one), so no union_by_name: that option reads every
    # file's footer at bind time, ~2x slower over 1,200 files even with epoch pruning.
    for have, paths in by_layout.items():
        cols = ", ".join(f'"{f.name}"' if f.name in have or f.name in PARTITION_COLUMNS
                         else f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema)
        lst = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
        parts.append(f"SELECT {cols} FROM read_parquet({lst}, hive_partitioning = {hive})")
    return "(" + " UNION ALL ".join(parts) + ")"


class StoreConnection:
    """A DuckDB connection (attribute access passes through) whose views follow the runs folder."""

    def __init__(self, runs_dir: str | Path, sandbox: bool = True, threads: int | None = None,
                 memory_limit: str = MEMORY_LIMIT, timeout_s: float = TIMEOUT_S, spill_limit: str = SPILL_LIMIT):
        self.runs_dir = Path(runs_dir).resolve()
        self.sandbox = sandbox
        self.timeout_s = timeout_s
        self._lock = threading.RLock()  # the main connection (views); each query takes its own cursor
        self._files = checked.FileCheck(self.runs_dir)
        self._problems: dict[str, str] = {}  # damaged JSON, run folders linked in: from the last refresh
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        self.con.execute(f"SET memory_limit = {_sql_str(memory_limit)}")
        if sandbox:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            # DuckDB adds its spill folder to the allowed ones (by default ./.tmp, any user folder):
            # a private, empty one keeps user SQL from reading whatever the cwd's .tmp holds.
            self._spill = tempfile.TemporaryDirectory(prefix="fosc-duckdb-")
            self.con.execute(f"SET temp_directory = {_sql_str(self._spill.name)}")
            self.con.execute(f"SET max_temp_directory_size = {_sql_str(spill_limit)}")
            allowed = _sql_str(str(self.runs_dir) + "/")
            self.con.execute(f"SET allowed_directories = [{allowed}]")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        self.refresh()

    # ---- what is readable --------------------------------------------------------------------
    @property
    def skipped(self) -> dict[str, str]:
        """Every file left out of the views (path -> one-line reason): damaged, foreign, or a link out."""
        return {**self._problems, **self._files.skipped()}

    def damaged(self) -> dict[str, list[str]]:
        """Run name -> '<file>: <reason>' of each of its files left out (for a notice per run)."""
        out: dict[str, list[str]] = {}
        for path, why in sorted(self.skipped.items()):
            p = Path(path)
            rel = p.relative_to(self.runs_dir) if p.is_relative_to(self.runs_dir) else None
            run = rel.parts[0] if rel is not None and rel.parts else p.name
            out.setdefault(run, []).append(f"{rel if rel is not None else p}: {why}")
        return out

    def run_names(self) -> list[str]:
        return [rd.name for rd in run_folders(self.runs_dir)]

    def table_files(self, table: str, run: str, epochs=None) -> list[tuple[str, frozenset[str]]]:
        """(real path, the table's columns it has) of the checked files of one run's ``table`` (``epochs``: those only,
        or 'last' for the latest epoch; None: all). A file that is damaged, foreign or a link out
        is left out here and shows in ``skipped``."""
        rd = runs.run_dir(self.runs_dir, run)
        if self._files.inside(rd) is None:
            return []
        if epochs == "last":
            have = (files.summary_files(rd) if table == files.SUMMARIES
                    else files.epoch_dirs(rd / table) if table in PARTITIONED else [])
            epochs = [max(e for e, _ in have)] if have else None
            if epochs is None:
                return []
        if table == files.SUMMARIES and epochs is not None:
            wanted = {int(e) for e in epochs}
            listing = lambda: [f for e, f in files.summary_files(rd) if e in wanted]  # noqa: E731
        else:
            wanted = None if epochs is None else [int(e) for e in epochs]
            listing = lambda: files.table_files(rd, table, wanted)  # noqa: E731
        return checked.checked_listing(self._files, table, listing)

    def partitions(self, table: str, run: str) -> list[int]:
        """The epochs of one run's partitioned ``table`` that have a readable file (names and
        footers only: no rows are read)."""
        rd = runs.run_dir(self.runs_dir, run)
        if self._files.inside(rd) is None:
            return []
        return [e for e, _ in files.epoch_dirs(rd / table) if self.table_files(table, run, (e,))]

    def relation(self, table: str, runs_: tuple[str, ...] | list[str] | None = None, epochs=None) -> str:
        """SQL for the rows of ``table`` of ``runs_`` (None: every run) and ``epochs`` (see
        ``table_files``), reading only those files: what keeps a dashboard query's cost independent
        of how many runs and epochs the folder holds."""
        names = self.run_names() if runs_ is None else list(runs_)
        return relation_sql(table, [f for run in names for f in self.table_files(table, run, epochs)])

    # ---- views -------------------------------------------------------------------------------
    def refresh(self) -> None:
        """New views over the files there now. DuckDB checks every listed file when a view is
        created, so a chunk compacted away since the listing fails it: list again (the new
        listing has the compacted file, which is renamed in before any chunk is deleted)."""
        with self._lock:
            self._retrying(self._build_views, races_allowed=4)

    def _build_views(self) -> None:
        problems: dict[str, str] = {}
        runs_rows = runs_table(self.runs_dir, problems)
        self._problems = problems
        listed: set[str] = set()
        rels = {}
        folders = run_folders(self.runs_dir)
        for name in TABLES:
            found = []
            for rd in folders:
                found += checked.checked_listing(self._files, name, self._lister(rd, name, listed))
            listed.update(real for real, _ in found)
            rels[name] = relation_sql(name, found)
        self._files.keep_only(listed)
        # A table, not a registered Arrow object: cursors (one per query) see the catalog only.
        self.con.register("_runs_arrow", runs_rows)
        try:
            self.con.execute("CREATE OR REPLACE TABLE _runs AS SELECT * FROM _runs_arrow")
        finally:
            self.con.unregister("_runs_arrow")
        self.con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
        for name, rel in rels.items():
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM {rel}")

    @staticmethod
    def _lister(rd: Path, table: str, listed: set[str]):
        """A listing of one run's ``table`` that also notes every name it lists, fit or not (keep_only
        forgets the verdicts on the others)."""
        def listing():
            names = files.table_files(rd, table)
            listed.update(str(f) for f in names)
            return names
        return listing

    # ---- queries -----------------------------------------------------------------------------
    def query_df(self, sql: str | Callable[[], tuple[str, list]], params: list | None = None,
                 timeout_s: float | None = None, max_rows: int | None = None) -> pd.DataFrame:
        """Run ``sql`` on a cursor of its own and return a pandas DataFrame.

        ``sql`` may be a function returning (sql, params), called again for each retry (so its
        file lists are fresh). Bounded: interrupted after ``timeout_s`` (QueryTimeout), at most
        ``max_rows`` rows fetched (``df.attrs['truncated']`` says if there were more), and DuckDB's
        memory limit. A listed chunk compacted away, or a damaged file DuckDB meets, makes it run
        again without that file (views are rebuilt first). Two races in a row are rare, three absurd.
        """
        build = sql if callable(sql) else (lambda: (sql, params or []))
        timeout = self.timeout_s if timeout_s is None else timeout_s
        return self._retrying(lambda: self._run(*build(), timeout, max_rows), races_allowed=2,
                              between=self.refresh)

    def _run(self, sql: str, params: list, timeout_s: float, max_rows: int | None) -> pd.DataFrame:
        cur = self.con.cursor()
        fired = threading.Event()

        def stop():
            fired.set()
            cur.interrupt()

        timer = threading.Timer(timeout_s, stop)
        timer.daemon = True
        timer.start()
        try:
            rel = cur.sql(sql, params=params) if params else cur.sql(sql)
            if rel is None:
                return pd.DataFrame()
            if max_rows is None:
                return rel.df()
            # LIMIT inside the query: DuckDB stops producing rows there, nothing beyond is built.
            df = rel.limit(int(max_rows) + 1).df()
            truncated = len(df) > max_rows
            df = df.iloc[:max_rows]
            df.attrs["truncated"] = truncated
            return df
        except duckdb.InterruptException:
            if fired.is_set():
                raise QueryTimeout(f"query stopped after {timeout_s:g} s (the time bound): "
                                   "filter or aggregate more") from None
            raise
        finally:
            timer.cancel()
            cur.close()

    def _retrying(self, action, races_allowed: int, between=None):
        """``action()``, again after a vanished chunk (up to ``races_allowed`` times) or after
        leaving out a damaged file DuckDB met; ``between()`` runs before each retry."""
        races = 0
        while True:
            try:
                return action()
            except _NOT_FILE_ERRORS:
                raise
            except duckdb.Error as e:
                if self._leave_out(e):
                    pass
                elif isinstance(e, duckdb.IOException) and races < races_allowed:
                    races += 1
                else:
                    raise
            if between is not None:
                between()

    def _leave_out(self, e: duckdb.Error) -> bool:
        """Leave out the damaged file behind ``e``: the one DuckDB names, else (DuckDB did not say
        which) every listed file that fails a full read. False: not a damaged file of ours."""
        text = str(e).strip()
        line = text.splitlines()[0] if text else type(e).__name__
        m = _NAMED_FILE.search(text)
        if m:
            return Path(m.group(1)).exists() and self._files.mark_damaged(m.group(1), line)
        if not _FILE_WORDS.search(text):
            return False
        found = False
        for path in self._files.unprobed():
            try:
                self._run(f"SELECT count(*), max(hash(COLUMNS(*))) FROM read_parquet({_sql_str(path)})", [],
                          self.timeout_s, None)
                self._files.mark_probed(path)
            except (QueryTimeout, duckdb.InterruptException, duckdb.OutOfMemoryException):
                raise
            except duckdb.Error as probe_error:
                found |= self._files.mark_damaged(path, f"{line} (found by reading it in full: "
                                                        f"{str(probe_error).strip().splitlines()[0][:120]})")
        return found

    def __getattr__(self, name):
        return getattr(self.con, name)

    def close(self) -> None:
        self.con.close()
        if self.sandbox:
            self._spill.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(runs_dir: str | Path | None = None, sandbox: bool = True, threads: int | None = None,
               timeout_s: float = TIMEOUT_S) -> StoreConnection:
    return StoreConnection(runs_dir if runs_dir is not None else runs.default_runs_dir(), sandbox, threads,
                           timeout_s=timeout_s)
