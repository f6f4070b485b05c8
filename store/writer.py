"""Buffered Parquet writer for one run and one rank, off the training thread.

The trainer hands over tensors (on any device) and returns at once; a background thread moves them
to the host, buffers them, and flushes a complete chunk file atomically every ``flush_rows`` rows or
``flush_seconds`` seconds, whichever comes first (the live-latency knob). ``end_epoch`` drains the
queue and compacts the epoch's chunks into one file with large row groups, so finished epochs read
fast. A failure in the thread (disk full, read-only folder) is kept and raised on the trainer's next
call, with the path in the message.
"""
from __future__ import annotations

import queue
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store import faults, files, runs
from store.schema import TABLES

ROW_GROUP_SIZE = 122_880  # DuckDB's own row group size: smaller groups read markedly slower
COMPRESSION = "zstd"


class WriterError(RuntimeError):
    """The writer thread failed; the message names the path and the cause."""


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, on any device
        value = value.detach()
        if value.device.type != "cpu":
            value = value.cpu()
        return value.numpy()
    return np.asarray(value)


def to_arrow(table: str, run: str, columns: dict[str, Any], extra: dict[str, Any] | None = None) -> pa.Table:
    """Columns (arrays or scalars) -> an Arrow table in the stored schema of ``table``."""
    schema = TABLES[table]
    cols = dict(columns)
    if extra:
        cols.update(extra)
    n = max((len(v) for v in cols.values() if np.ndim(v) > 0), default=1)
    arrays = []
    for field in schema:
        if field.name == "run":
            arrays.append(pa.array([run], pa.string()).take(pa.array(np.zeros(n, dtype=np.int64))))
            continue
        v = cols[field.name]
        arr = np.asarray(v)
        if arr.ndim == 0:
            arr = np.full(n, arr.item())
        arrays.append(pa.array(arr, type=field.type, from_pandas=True))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_parquet_atomic(table: pa.Table, path: Path, fsync: bool = True, site: str | None = None) -> None:
    """``table`` as a Parquet file at ``path``, atomically and (by default) fsynced: a power loss
    leaves the old file or the new one, never a zero-byte one."""
    runs.atomic_write(path, lambda tmp: pq.write_table(table, tmp, compression=COMPRESSION,
                                                       row_group_size=ROW_GROUP_SIZE), fsync=fsync, site=site)


class RunWriter:
    """Writes the per-example tables of one run for one rank."""

    def __init__(self, run_dir: str | Path, run_name: str, rank: int = 0,
                 flush_rows: int = 100_000, flush_seconds: float = 10.0):
        self.run_dir = Path(run_dir)
        self.run = run_name
        self.rank = rank
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self._queue: queue.Queue = queue.Queue(maxsize=256)
        self._buffers: dict[tuple[str, int], list[dict[str, np.ndarray]]] = {}
        self._buffered_rows: dict[tuple[str, int], int] = {}
        self._first_at: dict[tuple[str, int], float] = {}
        self._seq = self._next_seq()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"fosc-writer-r{rank}", daemon=True)
        self._thread.start()

    # ---- trainer side -------------------------------------------------------------------------
    def log(self, table: str, epoch: int, columns: dict[str, Any]) -> None:
        """Queue rows of ``table`` (examples or steps) for ``epoch``. Waits for the disk only when
        256 batches are already queued (backpressure rather than unbounded memory)."""
        self.check()
        self._queue.put(("rows", table, epoch, columns))

    def end_epoch(self, epoch: int) -> None:
        """Block until every row of ``epoch`` is on disk, compacted into one file per table."""
        self._wait_for("end_epoch", epoch)

    def flush(self) -> None:
        """Block until every row logged so far is on disk (as chunks, for epochs not yet ended)."""
        self._wait_for("flush", None)

    def _wait_for(self, kind: str, arg) -> None:
        done = threading.Event()
        self._queue.put((kind, arg, done))
        while not done.wait(0.05):
            self.check()
            if not self._thread.is_alive():
                raise WriterError("store writer thread died")
        self.check()

    def write_epoch_summary(self, row: dict[str, Any]) -> None:
        self.check()
        path = files.summary_path(self.run_dir, int(row["epoch"]))
        self._guarded(path, lambda: write_parquet_atomic(to_arrow("epochs", self.run, row), path, site="summary"))

    def event(self, kind: str, detail: str = "", epoch: int = -1, batch: int = -1) -> None:
        write_event(self.run_dir, self.run, kind, detail, epoch, batch, rank=self.rank)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(("close",))
            self._thread.join()
        self.check()

    def check(self) -> None:
        e = self._error
        if e is not None:
            raise WriterError(str(e) if isinstance(e, WriterError) else f"store writer failed: {type(e).__name__}: {e}") from e

    # ---- writer thread ------------------------------------------------------------------------
    def _next_seq(self) -> int:
        """Chunk numbers keep growing across resumes, so a new chunk never replaces an old one."""
        seq = 0
        for table in ("examples", "steps"):
            for _, d in files.epoch_dirs(self.run_dir / table):
                for f in files.chunk_files(d, self.rank):
                    seq = max(seq, files.chunk_seq(f) + 1)
        return seq

    def _guarded(self, path: Path, fn) -> None:
        try:
            fn()
        except OSError as e:
            raise WriterError(f"cannot write {path}: {e.strerror or e}") from e

    def _loop(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                item = None
            try:
                if item is None:
                    self._flush_due()
                    continue
                kind = item[0]
                if kind == "rows":
                    self._add(*item[1:])
                elif kind == "end_epoch":
                    self._end_epoch(item[1])
                    item[2].set()
                elif kind == "flush":
                    for key in list(self._buffers):
                        self._flush(key)
                    item[2].set()
                elif kind == "close":
                    for key in list(self._buffers):
                        self._flush(key)
                    return
            except BaseException as e:  # kept and raised on the trainer thread
                self._error = e
                if item is not None and item[0] in ("end_epoch", "flush"):
                    item[2].set()
                self._drain_after_error()
                return

    def _drain_after_error(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item[0] in ("end_epoch", "flush"):
                item[2].set()

    def _add(self, table: str, epoch: int, columns: dict[str, Any]) -> None:
        key = (table, epoch)
        cols = {k: _to_numpy(v) for k, v in columns.items()}
        n = max((len(v) for v in cols.values() if v.ndim), default=1)
        cols = {k: v if v.ndim else np.full(n, v) for k, v in cols.items()}  # a scalar fills its column
        self._buffers.setdefault(key, []).append(cols)
        self._buffered_rows[key] = self._buffered_rows.get(key, 0) + n
        self._first_at.setdefault(key, time.monotonic())
        if self._buffered_rows[key] >= self.flush_rows:
            self._flush(key)
        else:
            self._flush_due()

    def _flush_due(self) -> None:
        now = time.monotonic()
        for key, t0 in list(self._first_at.items()):
            if now - t0 >= self.flush_seconds:
                self._flush(key)

    def _take(self, key: tuple[str, int]) -> pa.Table | None:
        parts = self._buffers.pop(key, None)
        self._buffered_rows.pop(key, None)
        self._first_at.pop(key, None)
        if not parts:
            return None
        cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return to_arrow(key[0], self.run, cols, extra={"rank": self.rank})

    def _flush(self, key: tuple[str, int]) -> None:
        d = runs.epoch_dir(self.run_dir, key[0], key[1])
        if (d / files.compact_name(self.rank)).exists():  # a chunk beside it would be hidden
            return self._compact(*key)
        table = self._take(key)
        if table is None:
            return
        path = d / files.chunk_name(self.rank, self._seq)
        self._seq += 1
        self._guarded(path, lambda: write_parquet_atomic(table, path, site="flush"))

    def _end_epoch(self, epoch: int) -> None:
        for table in ("examples", "steps"):
            self._compact(table, epoch)
        for table, e in [k for k in self._buffers if k[1] < epoch]:  # stragglers of an earlier epoch
            self._compact(table, e)

    def _compact(self, table: str, epoch: int) -> None:
        d = runs.epoch_dir(self.run_dir, table, epoch)
        chunks = files.chunk_files(d, self.rank)
        pending = self._take((table, epoch))
        if not chunks and pending is None:
            return
        target = d / files.compact_name(self.rank)
        earlier = [target] if target.exists() else []  # compacting again keeps what was compacted
        parts = [pq.read_table(c, schema=TABLES[table]) for c in earlier + chunks]
        if pending is not None:
            parts.append(pending)
        merged = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        self._guarded(target, lambda: write_parquet_atomic(merged, target, site="compact"))
        faults.hit("compact-unlink", target)
        for c in chunks:  # readers prefer the compacted file, so these are already invisible
            c.unlink(missing_ok=True)


def write_event(run_dir: Path, run: str, kind: str, detail: str = "", epoch: int = -1, batch: int = -1,
                rank: int = 0) -> None:
    """One small Parquet file per event: events are rare, and each file is whole or absent."""
    now = datetime.now(timezone.utc)
    row = {"time": np.array([now.replace(tzinfo=None)], dtype="datetime64[us]"), "epoch": epoch,
           "batch": batch, "kind": kind, "detail": detail}
    table = to_arrow("events", run, row)
    path = files.event_path(Path(run_dir), rank)
    try:
        write_parquet_atomic(table, path)
    except OSError as e:
        raise WriterError(f"cannot write {path}: {e.strerror or e}") from e
