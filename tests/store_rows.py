"""Synthetic per-example rows for the store's own tests (the writer is the unit under test there).

Also the writer process the crash and live tests start:
``python tests/store_rows.py RUN_DIR`` writes epochs of ``BATCHES`` x ``ROWS`` rows forever, prints
``ready`` once it has started, and records the last epoch whose ``end_epoch`` returned in
``done.json`` (what a checkpoint records in a real run).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROWS = 100      # rows per batch: every chunk and every snapshot count is a multiple of it
BATCHES = 10    # batches per epoch: idx runs over 0 .. ROWS * BATCHES - 1
DONE = "done.json"


def examples(epoch: int, b: int, n: int = ROWS) -> dict:
    rng = np.random.default_rng(epoch * 1000 + b)
    return {"batch": np.full(n, b, dtype=np.int32), "idx": np.arange(b * n, (b + 1) * n, dtype=np.int32),
            "fosc": rng.random(n, dtype=np.float32), "loss": rng.random(n, dtype=np.float32),
            "steps": rng.integers(0, 11, n).astype(np.int16), "correct": rng.random(n) > 0.5,
            "c_t": np.float32(0.5), "fosc_box": rng.random(n, dtype=np.float32),
            "grad_l1": rng.random(n, dtype=np.float32), "p_true": rng.random(n, dtype=np.float32)}


def steps(epoch: int, b: int, k: int = 3) -> dict:
    """The trajectory of the batch's first example: k+1 steps."""
    return {"batch": np.full(k + 1, b, dtype=np.int32), "idx": np.full(k + 1, b * ROWS, dtype=np.int32),
            "step": np.arange(k + 1, dtype=np.int16), "fosc": np.linspace(1, 0, k + 1, dtype=np.float32),
            "loss": np.ones(k + 1, dtype=np.float32), "active": np.arange(k + 1) < k,
            "fosc_box": np.linspace(1, 0, k + 1, dtype=np.float32), "grad_l1": np.ones(k + 1, dtype=np.float32)}


def write_epoch(writer, epoch: int, pause: float = 0.0) -> None:
    for b in range(BATCHES):
        writer.log("examples", epoch, examples(epoch, b))
        writer.log("steps", epoch, steps(epoch, b))
        if pause:
            time.sleep(pause)
    writer.end_epoch(epoch)


def new_run(run_dir: Path) -> None:
    from store import runs

    runs.write_json(run_dir / runs.CONFIG, {"strategy": "synthetic"})


def _writer_process(run_dir: Path) -> None:
    from store import runs
    from store.writer import RunWriter

    new_run(run_dir)
    writer = RunWriter(run_dir, run_dir.name, flush_rows=200, flush_seconds=0.05)
    print("ready", flush=True)
    epoch = 0
    while True:
        write_epoch(writer, epoch, pause=0.002)
        runs.write_json(run_dir / DONE, {"epoch": epoch}, fsync=False)
        epoch += 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    _writer_process(Path(sys.argv[1]))
