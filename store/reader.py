"""``store.open(runs_dir)``: a DuckDB connection with one view per table over every run.

Views are built from an explicit snapshot of the files (see :mod:`store.files`), so a live writer's
compaction never shows a row twice. ``refresh()`` takes a new snapshot; ``query_df`` retries once
with a fresh snapshot if a listed chunk vanished (compacted away) before DuckDB opened it.
With ``sandbox=True`` (the default) the connection can read only inside the runs directory and its
configuration is locked, so user SQL cannot reach other files.
"""
from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa

from store import files, runs
from store.schema import PARTITIONED, TABLES, table_schema

VIEWS = ("runs", "examples", "steps", "epochs", "evals", "events")

RUNS_COLUMNS = pa.schema([
    ("run", pa.string()), ("strategy", pa.string()), ("dataset", pa.string()), ("model", pa.string()),
    ("eps", pa.float64()), ("epochs", pa.int32()), ("state", pa.string()), ("epoch", pa.int32()),
    ("created_at", pa.string()), ("updated_at", pa.string()), ("git_commit", pa.string()),
    ("code_hash", pa.string()), ("message", pa.string()), ("config", pa.string()),
])


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _runs_table(runs_dir: Path) -> pa.Table:
    rows = {f.name: [] for f in RUNS_COLUMNS}
    for rd in runs.list_runs(runs_dir):
        try:
            cfg = runs.read_json(rd / runs.CONFIG, {}) or {}
            meta = runs.read_json(rd / runs.META, {}) or {}
        except runs.StoreError:
            continue
        status = runs.read_status(rd)
        vals = {
            "run": rd.name, "strategy": cfg.get("strategy"), "dataset": cfg.get("dataset"),
            "model": cfg.get("model"), "eps": cfg.get("eps"), "epochs": cfg.get("epochs"),
            "state": runs.effective_state(rd), "epoch": status.get("epoch"),
            "created_at": meta.get("created_at"), "updated_at": status.get("updated_at"),
            "git_commit": meta.get("git_commit"), "code_hash": meta.get("code_hash"),
            "message": status.get("message"), "config": json.dumps(cfg, sort_keys=True),
        }
        for k, v in vals.items():
            rows[k].append(v)
    return pa.Table.from_pydict(rows, schema=RUNS_COLUMNS)


def snapshot(runs_dir: Path) -> dict[str, list[str]]:
    """Table name -> the files that make it up right now, over all runs."""
    out: dict[str, list[str]] = {t: [] for t in TABLES}
    for rd in runs.list_runs(runs_dir):
        for t in TABLES:
            tdir = rd / t
            found = files.partitioned_files(tdir) if t in PARTITIONED else files.flat_files(tdir)
            out[t].extend(str(p.resolve()) for p in found)
    return out


class StoreConnection:
    """A DuckDB connection (attribute access passes through) whose views follow the runs folder."""

    def __init__(self, runs_dir: str | Path, sandbox: bool = True, threads: int | None = None):
        self.runs_dir = Path(runs_dir).resolve()
        self.con = duckdb.connect(":memory:")
        if threads:
            self.con.execute(f"SET threads = {int(threads)}")
        for name in TABLES:  # typed empty tables back the views of tables with no files yet
            self.con.register(f"_empty_{name}", table_schema(name).empty_table())
        if sandbox:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
            allowed = _sql_str(str(self.runs_dir) + "/")
            self.con.execute(f"SET allowed_directories = [{allowed}]")
            self.con.execute("SET enable_external_access = false")
            self.con.execute("SET lock_configuration = true")
        self.refresh()

    def refresh(self) -> None:
        snap = snapshot(self.runs_dir)
        self.con.register("_runs", _runs_table(self.runs_dir))
        self.con.execute("CREATE OR REPLACE VIEW runs AS SELECT * FROM _runs")
        for name, paths in snap.items():
            cols = ", ".join(f'"{f.name}"' for f in table_schema(name))
            if not paths:
                src = f"_empty_{name}"
            else:
                lst = "[" + ", ".join(_sql_str(p) for p in paths) + "]"
                hive = "true, hive_types = {'epoch': 'INTEGER'}" if name in PARTITIONED else "false"
                src = f"read_parquet({lst}, hive_partitioning = {hive}, union_by_name = true)"
            self.con.execute(f"CREATE OR REPLACE VIEW {name} AS SELECT {cols} FROM {src}")

    def query_df(self, sql: str, params: list | None = None):
        """Run ``sql`` and return a pandas DataFrame, retrying once on a vanished chunk."""
        try:
            return self.con.execute(sql, params or []).df()
        except duckdb.IOException:
            self.refresh()
            return self.con.execute(sql, params or []).df()

    def __getattr__(self, name):
        return getattr(self.con, name)

    def close(self) -> None:
        self.con.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_store(runs_dir: str | Path | None = None, sandbox: bool = True, threads: int | None = None) -> StoreConnection:
    return StoreConnection(runs_dir if runs_dir is not None else runs.default_runs_dir(), sandbox, threads)
