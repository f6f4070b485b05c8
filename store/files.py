"""Which Parquet files make up a table right now: one consistent snapshot for readers.

The writer flushes chunks ``part-r<rank>-<seq>.parquet`` into ``<table>/epoch=NNN/`` and, when the
epoch ends, compacts them into ``compact-r<rank>.parquet`` before deleting the chunks. For a short
moment (or after a crash in between) both exist; the rule here picks the compacted file and ignores
that rank's chunks, so a reader never counts a row twice. Temp files start with '.' and end in
'.tmp', so no glob for ``*.parquet`` ever matches a half-written file.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

_CHUNK = re.compile(r"^part-r(\d+)-(\d+)\.parquet$")
_COMPACT = re.compile(r"^compact-r(\d+)\.parquet$")
_EPOCH_DIR = re.compile(r"^epoch=(\d+)$")


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
