"""Which Parquet files of a runs folder a reader may open: every file there is untrusted input.

A file is read only if its real path (links resolved) is inside the runs folder, it is a regular
file, and its footer has every column ``store/schema.py`` gives its table with that type (columns
of ``NEWER_COLUMNS`` may be missing: runs logged before them; columns the schema does not know are
ignored; a partition column inside the file is not allowed). Anything else is left out and kept in
``skipped`` with a one-line reason, so a damaged or foreign file affects only itself: never NULL
rows for the missing columns of a foreign file. A verdict is kept until the
file's size, mtime or inode changes: the writer renames whole files into place and never edits one.
"""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from store.schema import NEWER_COLUMNS, PARTITION_COLUMNS, PARTITIONED, TABLES

def _layout(table: str, schema: pa.Schema) -> frozenset[str] | None:
    """The table's columns the file has (its layout), or None if it is not a file of ``table``."""
    have = {f.name: f.type for f in schema}
    if set(have) & set(PARTITION_COLUMNS) and table in PARTITIONED:
        return None  # would clash with the epoch=NNN folder
    newer = set(NEWER_COLUMNS.get(table, ()))
    present = set()
    for f in TABLES[table]:
        if f.name in have:
            if have[f.name] != f.type:
                return None
            present.add(f.name)
        elif f.name not in newer:
            return None
    return frozenset(present)


def _footer_problem(e: Exception, size: int) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if size == 0:
        return "empty file (0 bytes)"
    if "magic bytes" in text.lower() or "smaller than the minimum" in text.lower():
        return "No magic bytes at its end: cut short, or not a Parquet file"
    return f"not readable as Parquet ({text})"


class FileCheck:
    """Verdicts on the files of one runs folder, shared by every query of a store connection."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._verdicts: dict[str, tuple[tuple, str | None, str | None]] = {}  # path -> (stat key, problem, layout)
        self._probed: set[tuple[str, tuple]] = set()  # (path, stat key) read in full without an error

    def inside(self, path: Path) -> Path | None:
        """``path``'s real path if it stays inside the runs folder, else None."""
        real = Path(os.path.realpath(path))
        return real if real.is_relative_to(self.root) else None

    def check(self, table: str, path: Path) -> tuple[str | None, frozenset[str] | None]:
        """(real path, the table's columns it has) of a file fit to read; (None, None) for one left
        out (see ``skipped``)."""
        real = self.inside(path)
        if real is None:
            self._set(str(path), (), "links outside the runs folder; not read", None)
            return None, None
        try:
            st = os.stat(real)
        except OSError:  # gone since the listing (compacted away): not a problem, just absent
            return None, None
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            known = self._verdicts.get(str(real))
        if known is None or known[0] != key:
            problem, layout = self._inspect(table, real, st)
            known = self._set(str(real), key, problem, layout)
        return (str(real), known[2]) if known[1] is None else (None, None)

    def _inspect(self, table: str, real: Path, st: os.stat_result) -> tuple[str | None, str | None]:
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file; not read", None
        try:
            schema = pq.read_schema(real)
        except (OSError, pa.ArrowException, ValueError) as e:
            return _footer_problem(e, st.st_size), None
        layout = _layout(table, schema)
        if layout is None:
            names = ", ".join(schema.names[:8]) + (", ..." if len(schema.names) > 8 else "")
            return f"not a {table} file: its columns ({names}) do not match store/schema.py", None
        return None, layout

    def _set(self, path: str, key: tuple, problem: str | None, layout: str | None):
        with self._lock:
            self._verdicts[path] = (key, problem, layout)
            return self._verdicts[path]

    def mark_damaged(self, path: str, problem: str) -> bool:
        """Record a file DuckDB failed to read; False if it is not one of ours or already known."""
        real = self.inside(Path(path))
        if real is None:
            return False
        try:
            st = os.stat(real)
        except OSError:
            return False
        with self._lock:
            known = self._verdicts.get(str(real))
            if known is not None and known[1] is not None:
                return False
            self._verdicts[str(real)] = ((st.st_size, st.st_mtime_ns, st.st_ino), problem, None)
        return True

    def keep_only(self, paths: set[str]) -> None:
        """Forget verdicts on files no longer listed (deleted, or compacted away)."""
        with self._lock:
            self._verdicts = {p: v for p, v in self._verdicts.items() if p in paths}
            self._probed = {k for k in self._probed if k[0] in paths}

    def skipped(self) -> dict[str, str]:
        with self._lock:
            return {p: v[1] for p, v in self._verdicts.items() if v[1] is not None}

    def unprobed(self) -> list[str]:
        """Files judged fit by their footer only: the candidates when DuckDB fails without a name."""
        with self._lock:
            return [p for p, v in self._verdicts.items()
                    if v[1] is None and v[2] is not None and (p, v[0]) not in self._probed]

    def mark_probed(self, path: str) -> None:
        with self._lock:
            known = self._verdicts.get(path)
            if known is not None:
                self._probed.add((path, known[0]))


class ListingRace(OSError):
    """The runs folder kept changing under a listing: files listed were gone by their check each time."""


def checked_listing(check: FileCheck, table: str, listing, tries: int = 5) -> list[tuple[str, frozenset[str]]]:
    """(real path, columns) of the fit files ``listing()`` names. A listed file gone by its check was a
    chunk compacted away; its rows are in the compacted file, renamed in before any chunk is deleted,
    so list again. (Leaving it out instead drops a whole epoch's rows from the snapshot: a reader's
    counts would shrink while the writer writes.)"""
    for _ in range(tries):
        out, gone = [], False
        for f in listing():
            real, layout = check.check(table, Path(f))
            if real is not None:
                out.append((real, layout))
            elif not os.path.lexists(f):
                gone = True
                break
        if not gone:
            return out
    raise ListingRace(f"{table}: files kept vanishing between listing and reading ({tries} listings)")


def read_rows(run_dir: Path, table: str, paths: list[Path] | None = None,
              columns: list[str] | None = None) -> tuple[list[dict], dict[str, str]]:
    """Rows of one run's ``table`` for Python readers (the trainer's reports, alarms, evaluate), by the
    same rule as the views: a file linked out of the runs folder, foreign or damaged is left out and
    returned in the second value (path -> reason), never read. ``paths``: those files only."""
    from store import files  # files imports nothing of ours; kept local so this module stays a leaf

    check = FileCheck(Path(run_dir).parent)
    rows: list[dict] = []
    for f in files.table_files(Path(run_dir), table) if paths is None else paths:
        real, layout = check.check(table, Path(f))
        if real is None:
            continue
        try:
            t = pq.read_table(real, columns=[c for c in columns if c in layout] if columns else None)
        except (OSError, pa.ArrowException, ValueError) as e:
            check.mark_damaged(real, _footer_problem(e, os.stat(real).st_size))
            continue
        rows += t.to_pylist()
    return rows, check.skipped()
