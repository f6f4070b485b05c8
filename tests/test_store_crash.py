"""A writer killed with SIGKILL at any moment leaves a readable folder; a resume makes it whole.

The trainer-level check (a resumed training run ends with one row per (epoch, example)) lives with
the trainer's tests; this is the store level: kill a process that writes in a loop, open the
folder, then resume as the trainer does (clean_temp_files, remove_epochs_from, a new RunWriter).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import store
from store import runs
from store.writer import RunWriter
from store_rows import BATCHES, DONE, ROWS, write_epoch

ROOT = Path(__file__).resolve().parent.parent
WRITER = Path(__file__).resolve().parent / "store_rows.py"


def kill_writer(run_dir: Path, delay: float, fault: str | None = None) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("FOSC_FAULT", None)
    if fault:
        env["FOSC_FAULT"] = fault  # store.faults: SIGKILL itself at that exact point
    proc = subprocess.Popen([sys.executable, str(WRITER), str(run_dir)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        if fault:
            proc.wait(timeout=60)
        else:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def check_readable(runs_dir: Path) -> None:
    """store.open works on the killed folder and never shows a row twice."""
    with store.open(runs_dir) as con:
        n, d = con.query_df("SELECT count(*) AS n, count(DISTINCT (epoch, idx)) AS d FROM examples").iloc[0]
        assert n == d and n % ROWS == 0
        s, sd = con.query_df("SELECT count(*) AS n, count(DISTINCT (epoch, idx, step)) AS d FROM steps").iloc[0]
        assert s == sd


def resume_and_check(run_dir: Path) -> int:
    done = runs.read_json(run_dir / DONE, {"epoch": -1})["epoch"]
    first = done + 1
    runs.clean_temp_files(run_dir)
    runs.remove_epochs_from(run_dir, first)
    writer = RunWriter(run_dir, run_dir.name, flush_rows=200, flush_seconds=0.05)
    write_epoch(writer, first)
    writer.close()
    assert not list(run_dir.rglob("*.tmp"))
    with store.open(run_dir.parent) as con:
        per = con.query_df("SELECT epoch, count(*) AS n, count(DISTINCT idx) AS u, min(idx) AS lo, max(idx) AS hi "
                           "FROM examples GROUP BY epoch ORDER BY epoch")
        assert per["epoch"].tolist() == list(range(first + 1))            # no epoch missing, none extra
        assert (per["n"] == ROWS * BATCHES).all() and (per["u"] == ROWS * BATCHES).all()  # no duplicates
        assert (per["lo"] == 0).all() and (per["hi"] == ROWS * BATCHES - 1).all()          # no gaps
        traj = con.query_df("SELECT epoch, count(*) AS n, count(DISTINCT (idx, step)) AS u FROM steps GROUP BY epoch")
        assert (traj["n"] == BATCHES * 4).all() and (traj["u"] == BATCHES * 4).all()
    return first


@pytest.mark.parametrize("seed", range(3))
def test_sigkill_at_a_random_moment(tmp_path, seed):
    run_dir = tmp_path / "runs" / f"kill-{seed}"
    kill_writer(run_dir, random.Random(seed).uniform(0.2, 1.5))
    check_readable(run_dir.parent)
    resume_and_check(run_dir)


# Compaction sites count examples then steps per epoch: the 3rd is epoch 1's examples.
@pytest.mark.parametrize("fault", ["flush:7", "compact:3", "compact-unlink:3"])
def test_sigkill_at_the_worst_moments(tmp_path, fault):
    """Mid-flush (temp file written, not renamed), mid-compaction, and between the compacted
    file's rename and the deletion of its chunks (both on disk: the snapshot must pick one)."""
    run_dir = tmp_path / "runs" / "kill"
    kill_writer(run_dir, 0.0, fault)
    temps = list(run_dir.rglob("*.tmp"))
    if fault.startswith(("flush", "compact:")):
        assert temps and all(t.name.startswith(".") for t in temps)  # the half-written file is hidden
    if fault.startswith("compact-unlink"):
        d = runs.epoch_dir(run_dir, "examples", 1)
        assert (d / "compact-r0.parquet").exists() and list(d.glob("part-r0-*.parquet"))
    check_readable(run_dir.parent)
    first = resume_and_check(run_dir)
    if fault.startswith("compact"):
        assert first == 1
