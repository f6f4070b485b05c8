"""``store.open(runs_dir)``: a DuckDB connection with one view per table over every run.

Views are built from an explicit snapshot of the files (see :mod:`store.files`), so a live writer's
compaction never shows a row twice. ``refresh()`` takes a new snapshot; ``query_df`` retries
with a fresh snapshot if a listed chunk vanished (compacted away) before DuckDB opened it.
With ``sandbox=True`` (the default) the connection can read only inside the runs directory and its
configuration is locked, so user SQL cannot reach other files.
"""
from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa

from store import files, runs
from store.schema import PARTITIONED, TABLES, duckdb_type, table_schema

VIEWS = ("runs", "examples", "steps", "epochs", "evals", "events")
_NAMED_FILE = re.compile(r"file '([^']+)'")  # how DuckDB names the file it could not read

RUNS_COLUMNS = pa.schema([
    ("run", pa.string()), ("strategy", pa.string()), ("dataset", pa.string()), ("model", pa.string()),
    ("eps", pa.float64()), ("epochs", pa.int32()), ("state", pa.string()), ("epoch", pa.int32()),
    ("created_at", pa.string()), ("updated_at", pa.string()), ("git_commit", pa.string()),
    ("code_hash", pa.string()), ("message", pa.string()), ("config", pa.string()),
])


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def runs_table(runs_dir: Path) -> pa.Table:
    """One row per run folder from its JSON files (config, meta, status): cheap, always current."""
    rows = {f.name: [] for f in RUNS_COLUMNS}
    for rd in runs.list_runs(runs_dir):
        try:
            cfg = runs.read_json(rd / runs.CONFIG, {}) or {}
            meta = runs.read_json(rd / runs.META, {}) or {}
        except runs.StoreError:
            continue
        cfg, meta = (d if isinstance(d, dict) else {} for d in (cfg, meta))
        status = runs.read_status(rd)
        vals = {
            "run": rd.name, "strategy": cfg.get("strategy"), "dataset": cfg.get("dataset"),
            "model": cfg.get("model"), "eps": cfg.get("eps"), "epochs": cfg.get("epochs"),
            "state": runs.effective_state(rd), "epoch": status.get("epoch"),
            "created_at": meta.get("created_at"), "updated_at": status.get("updated_at"),
            "git_commit": meta.get("git_commit"), "code_hash": meta.get("code_hash"),
            "message": status.get("message"), "config": json.dumps(cfg, sort_keys=True),
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


def snapshot(runs_dir: Path, inside_only: bool = False) -> dict[str, list[str]]:
    """Table name -> the files that make it up right now, over all runs.

    ``inside_only`` leaves out files whose real path is outside ``runs_dir`` (a symlinked run
    folder): the sandbox refuses them, and one refused file would break every view.
    """
    root = Path(runs_dir).resolve()
    out: dict[str, list[str]] = {t: [] for t in TABLES}
    for rd in runs.list_runs(runs_dir):
        for t in TABLES:
            tdir = rd / t
            found = files.partitioned_files(tdir) if t in PARTITIONED else files.flat_files(tdir)
            real = (p.resolve() for p in found)
            out[t].extend(str(p) for p in real if not inside_only or p.is_relative_to(root))
    return out


def _view_sql(name: str, paths: list[str]) -> str:
    schema = table_schema(name)
    if not paths:  # no files yet: typed and empty, so queries bind the same as with files
        return "SELECT " + ", ".join(f'CAST(NULL AS {duckdb_type(f.type)}) AS "{f.name}"' for f in schema) + " WHERE false"
    lst = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
    hive = "true, hive_types = {'epoch': 'INTEGER'}" if name in PARTITIONED else "false"
    cols = ", ".join(f'"{f.name}"' for f in schema)
    # Every file has the full schema (the writer casts to it), so no union_by_name: that option
    # reads every file's footer at bind time, ~2x slower over 1,200 files even with epoch pruning.
    return f"SELECT {cols} FROM read_parquet({lst}, hive_partitioning = {hive})"


class StoreConnection:
    """A DuckDB connection (attribute access passes through) whose views follow the runs folder."""

    def __init__(self, runs_dir: str | Path, sandbox: bool = True, threads: int | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.sandbox = sandbox
        self.skipped: dict[str, str] = {}  # damaged file -> DuckDB's one-line reason; left out of the views
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        if sandbox:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            # DuckDB adds its spill folder to the allowed ones (by default ./.tmp, any user folder):
            # a private, empty one keeps user SQL from reading whatever the cwd's .tmp holds.
            self._spill = tempfile.TemporaryDirectory(prefix="fosc-duckdb-")
            self.con.execute(f"SET temp_directory = {_sql_str(self._spill.name)}")
            allowed = _sql_str(str(self.runs_dir) + "/")
            self.con.execute(f"SET allowed_directories = [{allowed}]")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        self.refresh()

    def refresh(self) -> None:
        """New views over the files there now. DuckDB checks every listed file when a view is
        created, so a chunk compacted away since the listing fails it: list again (the new
        listing has the compacted file, which is renamed in before any chunk is deleted)."""
        self._retrying(self._build_views, races_allowed=4)

    def _retrying(self, action, races_allowed: int, between=None):
        """``action()``, again after a vanished chunk (up to ``races_allowed`` times) or after
        leaving out a damaged file DuckDB named; ``between()`` runs before each retry."""
        races = 0
        while True:
            try:
                return action()
            except duckdb.IOException:
                races += 1
                if races > races_allowed:
                    raise
            except duckdb.InvalidInputException as e:
                if not self._skip(e):
                    raise
            if between is not None:
                between()

    def _skip(self, e: duckdb.Error) -> bool:
        """Leave out the damaged Parquet file DuckDB names (e.g. cut short by a bad copy), so one
        file cannot break every view; ``skipped`` keeps it for the user. False: not a file error."""
        m = _NAMED_FILE.search(str(e))
        path = m.group(1) if m else None
        if path is None or path in self.skipped or not Path(path).is_relative_to(self.runs_dir):
            return False
        self.skipped[path] = str(e).strip().splitlines()[0]
        return True

    def _build_views(self) -> None:
        snap = snapshot(self.runs_dir, inside_only=self.sandbox)
        self.con.register("_runs", runs_table(self.runs_dir))
        self.con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
        for name, paths in snap.items():
            paths = [p for p in paths if p not in self.skipped]
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS {_view_sql(name, paths)}")

    def query_df(self, sql: str, params: list | None = None):
        """Run ``sql`` and return a pandas DataFrame, retrying on a vanished chunk.

        A chunk listed by the snapshot can be compacted away before DuckDB opens it; a fresh
        snapshot then lists the compacted file instead. Two races in a row are rare, three absurd.
        """
        return self._retrying(lambda: self.con.execute(sql, params or []).df(), races_allowed=2,
                              between=self.refresh)

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


def open_store(runs_dir: str | Path | None = None, sandbox: bool = True, threads: int | None = None) -> StoreConnection:
    return StoreConnection(runs_dir if runs_dir is not None else runs.default_runs_dir(), sandbox, threads)
