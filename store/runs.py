"""Run folder layout: where a run keeps its config, status, control file, checkpoints and tables.

Everything that reads or writes a run folder goes through the names defined here, so the layout
lives in one place. Writes are atomic (temp file in the same folder, fsync, rename): a reader or a
resumed run never sees half a file.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable

from store import faults, files

RUNS_DIR_ENV = "FOSC_RUNS_DIR"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")
MAX_JSON_BYTES = 4 << 20  # run-folder JSON files are a few kB; a bigger one is not ours

CONFIG = "config.json"
META = "meta.json"
STATUS = "status.json"
CONTROL = "control.json"
JOB = "job.json"
LOG = "train.log"
CHECKPOINTS = "checkpoints"


def checkpoint_path(run: Path, which: str = "last") -> Path:
    """``checkpoints/last.pt`` (the resume point) or ``best.pt`` (the best held-out PGD epoch)."""
    return Path(run) / CHECKPOINTS / f"{which}.pt"


class StoreError(ValueError):
    """A bad request to the store (bad run name, missing run): its message is one line for users."""


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def validate_run_name(name: str) -> str:
    if not isinstance(name, str) or not _RUN_NAME.fullmatch(name) or ".." in name:
        raise StoreError(
            f"invalid run name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def run_dir(runs_dir: str | Path, name: str) -> Path:
    return Path(runs_dir) / validate_run_name(name)


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders (those with a config entry: a damaged config still makes a run, which readers
    then report), sorted by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir()
                  if _RUN_NAME.fullmatch(p.name) and p.is_dir() and os.path.lexists(p / CONFIG))


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[Path], None], fsync: bool = True, site: str | None = None) -> None:
    """``write(tmp)`` fills a temp file beside ``path``, which is then renamed into place: readers see
    the old file or the whole new one. With ``fsync`` the file and the rename survive a power loss
    (no zero-byte file after a crash). The one atomic writer of the store: JSON, Parquet, checkpoints."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; run folders are shared read-only with the lab
        write(tmp)
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if site:
            faults.hit(site, path)
        os.replace(tmp, path)
        if fsync:  # the rename itself survives a power loss only once the folder is synced
            fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True, site: str | None = None) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(data), fsync=fsync, site=site)


def write_json(path: str | Path, obj: Any, fsync: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), fsync=fsync)


def read_bytes(path: str | Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """A run-folder file's bytes, read as untrusted input: never through a symbolic link (the store
    writes none; one may point anywhere), never from a FIFO or device (it would block or never end),
    at most ``limit`` bytes. FileNotFoundError if absent, StoreError (one line) otherwise."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        why = "a symbolic link, not read" if os.path.islink(path) else (e.strerror or str(e))
        raise StoreError(f"{path}: {why}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path}: not a regular file, not read")
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"{path}: larger than {limit >> 20} MiB, not read")
    return data


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file; ``default`` if it is missing. A damaged one raises StoreError (one line):
    not UTF-8, not JSON, a link, too big."""
    try:
        data = read_bytes(path)
    except FileNotFoundError:
        return default
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise StoreError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise StoreError(f"{path}: JSON nested too deeply") from None


def read_status(run: Path) -> dict:
    try:
        status = read_json(run / STATUS, default={}) or {}
    except StoreError:
        status = {}
    return status if isinstance(status, dict) else {}


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OSError, ValueError):
        return False
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def effective_state(run: Path) -> str:
    """The status file's state, except that a 'running' run whose process is gone is 'failed'."""
    status = read_status(run)
    state = status.get("state", "created")
    if state == "running" and not pid_alive(status.get("pid")):
        return "failed"
    return state


def epoch_dir(run: Path, table: str, epoch: int) -> Path:
    return files.epoch_dir(Path(run) / table, epoch)


def remove_epochs_from(run: Path, first_epoch: int) -> None:
    """Delete every logged row of epochs >= first_epoch (a resumed run redoes them)."""
    for table in ("examples", "steps"):
        for epoch, d in files.epoch_dirs(Path(run) / table):
            if epoch >= first_epoch and not d.is_symlink():  # a link's target is not ours to delete
                shutil.rmtree(d, ignore_errors=True)
    for epoch, f in files.summary_files(Path(run)):
        if epoch >= first_epoch:
            f.unlink(missing_ok=True)


def clean_temp_files(run: Path) -> None:
    """Remove temp files a killed writer left behind (they are never read: readers skip them)."""
    for tmp in run.rglob("*.tmp"):
        tmp.unlink(missing_ok=True)
