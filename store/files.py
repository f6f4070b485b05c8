"""Where each table's Parquet files live in a run folder, and which make up a table right now.

Every table file name is built and parsed here, nowhere else (writers, readers, the dashboard and
the benches call these): ``<table>/epoch=NNN/`` partitions, ``epochs/part-NNN.parquet`` summaries,
``evals/<checkpoint>-<setting>-<attack>[-<surrogate>].parquet`` and
``events/<time_ns>-r<rank>-<pid>.parquet``.

The writer flushes chunks ``part-r<rank>-<seq>.parquet`` into ``<table>/epoch=NNN/`` and, when the
epoch ends, compacts them into ``compact-r<rank>.parquet`` before deleting the chunks. For a short
moment (or after a crash in between) both exist; the rule here picks the compacted file and ignores
that rank's chunks, so a reader never counts a row twice. Temp files start with '.' and end in
'.tmp', so no glob for ``*.parquet`` ever matches a half-written file.
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

from store.schema import PARTITIONED

_CHUNK = re.compile(r"^part-r(\d+)-(\d+)\.parquet$")
_COMPACT = re.compile(r"^compact-r(\d+)\.parquet$")
_EPOCH_DIR = re.compile(r"^epoch=(\d+)$")
_SUMMARY = re.compile(r"^part-(\d+)\.parquet$")
SUMMARIES, EVALS, EVENTS = "epochs", "evals", "events"  # the flat tables' folders


def epoch_dir(table_dir: Path, epoch: int) -> Path:
    return Path(table_dir) / f"epoch={int(epoch):03d}"


def summary_path(run: Path, epoch: int) -> Path:
    """The one-row summary file of ``epoch`` (a resume rewrites it)."""
    return Path(run) / SUMMARIES / f"part-{int(epoch):03d}.parquet"


def summary_files(run: Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every epoch summary of a run, by epoch."""
    d = Path(run) / SUMMARIES
    return sorted((int(m.group(1)), d / n) for n in _scandir_names(d) if (m := _SUMMARY.match(n)))


def eval_path(run: Path, checkpoint: str, setting: str, attack: str, surrogate: str = "") -> Path:
    """One evaluation's file: re-evaluating the same (checkpoint, setting, attack, surrogate) replaces it."""
    tag = "-".join(s for s in (checkpoint, setting, attack, surrogate) if s)
    return Path(run) / EVALS / f"{tag}.parquet"


def event_path(run: Path, rank: int) -> Path:
    """A new event's file: one per event, named by time, rank and process, so none replaces another."""
    return Path(run) / EVENTS / f"{time.time_ns()}-r{int(rank)}-{os.getpid()}.parquet"


def chunk_name(rank: int, seq: int) -> str:
    return f"part-r{rank}-{seq:06d}.parquet"


def compact_name(rank: int) -> str:
    return f"compact-r{rank}.parquet"


def _scandir_names(path: Path) -> list[str]:
    try:
        with os.scandir(path) as it:
            return [e.name for e in it]
    except (FileNotFoundError, NotADirectoryError):
        return []


def epoch_files(epoch_dir: Path) -> list[Path]:
    """The files of one epoch partition, compacted files taking precedence over chunks."""
    names = _scandir_names(epoch_dir)
    compacted = {int(m.group(1)) for n in names if (m := _COMPACT.match(n))}
    files = []
    for n in sorted(names):
        if _COMPACT.match(n):
            files.append(epoch_dir / n)
        elif (m := _CHUNK.match(n)) and int(m.group(1)) not in compacted:
            files.append(epoch_dir / n)
    return files


def chunk_seq(path: Path) -> int:
    """The sequence number of a chunk file (``part-r<rank>-<seq>.parquet``)."""
    m = _CHUNK.match(Path(path).name)
    if not m:
        raise ValueError(f"not a chunk file name: {Path(path).name}")
    return int(m.group(2))


def chunk_files(epoch_dir: Path, rank: int) -> list[Path]:
    return sorted(epoch_dir / n for n in _scandir_names(epoch_dir)
                  if (m := _CHUNK.match(n)) and int(m.group(1)) == rank)


def epoch_dirs(table_dir: Path) -> list[tuple[int, Path]]:
    out = []
    for n in _scandir_names(table_dir):
        if m := _EPOCH_DIR.match(n):
            out.append((int(m.group(1)), table_dir / n))
    return sorted(out)


def partitioned_files(table_dir: Path) -> list[Path]:
    files: list[Path] = []
    for _, d in epoch_dirs(table_dir):
        files.extend(epoch_files(d))
    return files


def flat_files(table_dir: Path) -> list[Path]:
    return sorted(table_dir / n for n in _scandir_names(table_dir)
                  if n.endswith(".parquet") and not n.startswith("."))


def table_files(run: Path, table: str, epochs=None) -> list[Path]:
    """The files of one run's ``table`` by the snapshot rule; for a partitioned table only ``epochs``
    (all when None). Names only: the reader checks where they lead and what they hold."""
    tdir = Path(run) / table
    if table not in PARTITIONED:
        return flat_files(tdir)
    if epochs is None:
        return partitioned_files(tdir)
    return [f for e in epochs for f in epoch_files(epoch_dir(tdir, e))]


def folder_signature(runs_dir: Path) -> str:
    """A short digest that changes whenever a file is added, renamed into place or removed anywhere
    in the runs folder's run and table folders (the writer only ever renames whole files in, which
    updates the folder's mtime), or a run's JSON file changes: a cache key for query results."""
    h = hashlib.blake2b(digest_size=16)

    def add(path: Path) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return
        h.update(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{st.st_ino}\n".encode("utf-8", "surrogateescape"))

    root = Path(runs_dir)
    add(root)
    for run in sorted(_scandir_names(root)):
        rd = root / run
        add(rd)
        for name in sorted(_scandir_names(rd)):
            add(rd / name)  # JSON files, table folders
            if name in PARTITIONED:
                for _, d in epoch_dirs(rd / name):
                    add(d)
    return h.hexdigest()
