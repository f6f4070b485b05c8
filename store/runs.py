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
import tempfile
from pathlib import Path
from typing import Any

from store import faults

RUNS_DIR_ENV = "FOSC_RUNS_DIR"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")

CONFIG = "config.json"
META = "meta.json"
STATUS = "status.json"
CONTROL = "control.json"
JOB = "job.json"
LOG = "train.log"
CHECKPOINTS = "checkpoints"

STATES = ("created", "running", "finished", "failed", "stopped")


class StoreError(ValueError):
    """A bad request to the store (bad run name, missing run): its message is one line for users."""


def default_runs_dir() -> Path:
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


def validate_run_name(name: str) -> str:
    if not isinstance(name, str) or not _RUN_NAME.match(name) or ".." in name:
        raise StoreError(
            f"invalid run name {name!r}: use 1-80 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def run_dir(runs_dir: str | Path, name: str) -> Path:
    return Path(runs_dir) / validate_run_name(name)


def list_runs(runs_dir: str | Path) -> list[Path]:
    """Run folders (those with a config), sorted by name."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / CONFIG).is_file() and _RUN_NAME.match(p.name))


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


def atomic_write_bytes(path: str | Path, data: bytes, fsync: bool = True, site: str | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        if site:
            faults.hit(site, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_json(path: str | Path, obj: Any, fsync: bool = True) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode(), fsync=fsync)


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file; ``default`` if it is missing. A corrupt file raises StoreError."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return default
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


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


def table_dir(run: Path, table: str) -> Path:
    return run / table


def epoch_dir(run: Path, table: str, epoch: int) -> Path:
    return run / table / f"epoch={epoch:03d}"


def remove_epochs_from(run: Path, first_epoch: int) -> None:
    """Delete every logged row of epochs >= first_epoch (a resumed run redoes them)."""
    for table in ("examples", "steps"):
        tdir = run / table
        if not tdir.is_dir():
            continue
        for d in tdir.iterdir():
            m = re.fullmatch(r"epoch=(\d+)", d.name)
            if m and int(m.group(1)) >= first_epoch:
                shutil.rmtree(d, ignore_errors=True)
    edir = run / "epochs"
    if edir.is_dir():
        for f in edir.glob("part-*.parquet"):
            m = re.fullmatch(r"part-(\d+)\.parquet", f.name)
            if m and int(m.group(1)) >= first_epoch:
                f.unlink(missing_ok=True)


def clean_temp_files(run: Path) -> None:
    """Remove temp files a killed writer left behind (they are never read: readers skip them)."""
    for tmp in run.rglob("*.tmp"):
        tmp.unlink(missing_ok=True)
