"""torchrun with 2 CPU processes (gloo): DDP training, per-rank logs read as one table, equal weights.

The ranks share one run folder: each logs the positions rank::2 of every global batch to its own
Parquet files (a ``rank`` column in each), rank 0 writes checkpoints, epoch summaries and status.
``FOSC_DUMP_FINAL_WEIGHTS=<dir>`` (trainer/dist.py) makes each rank save its final state_dict, so the
test can compare the ranks' models.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

import store
from store import control, runs
from trainer import checkpoint, dist
from trainer.config import ConfigError

ROOT = Path(__file__).resolve().parent.parent
EPOCHS, N, BATCH = 3, 256, 64
FLAGS = ["--preset", "quick", "--strategy", "dynamic", "--c-max", "auto", "--c-max-auto-at", "start", "--t-prime", "2", "--dataset", "mnist",
         "--epochs", str(EPOCHS), "--n-train", str(N), "--batch-size", str(BATCH), "--steps", "5", "--heldout", "64",
         "--heldout-pgd-steps", "3", "--n-test", "64", "--no-eval-at-end", "--flush-rows", "32", "--device", "cpu",
         "--quiet"]


def torchrun(runs_dir: Path, *args: str, dump: Path | None = None, wait: bool = True):
    # --standalone: a private rendezvous on a free port, so parallel test runs never collide.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "trainer.run", "--runs-dir", str(runs_dir), *args]
    env = dict(os.environ, FOSC_DIST_BACKEND="gloo", OMP_NUM_THREADS="1")
    env.pop(dist.DUMP_ENV, None)
    if dump:
        env[dist.DUMP_ENV] = str(dump)
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if not wait:
        return p
    out, _ = p.communicate(timeout=600)
    return p.returncode, out


def dumped(d: Path) -> list[dict]:
    return [torch.load(d / f"rank{r}.pt", map_location="cpu") for r in (0, 1)]


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def flags(mnist_npz) -> list[str]:
    return [*FLAGS, "--data-root", str(mnist_npz)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, flags) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("ddp")
    rc, out = torchrun(d / "runs", *flags, "--name", "ddp", dump=d / "weights")
    assert rc == 0, out[-3000:]
    return d / "runs", d / "weights"


@pytest.mark.slow
def test_each_example_logged_once_by_the_rank_that_trained_it(ddp_run, mnist_npz):
    from trainer.data import epoch_order, load_dataset

    runs_dir, _ = ddp_run
    with store.open(runs_dir) as con:  # both ranks' files as one table
        rows = con.query_df("SELECT epoch, batch, rank, idx FROM examples WHERE run = 'ddp'")
    assert len(rows) == EPOCHS * N and not rows.duplicated(["epoch", "idx"]).any()
    data, _ = load_dataset("mnist", str(mnist_npz), torch.device("cpu"), heldout=64, n_train=N, n_test=64)
    for epoch in range(EPOCHS):
        order = epoch_order(N, 0, epoch, "cpu")
        for b in range(N // BATCH):
            ids = order[b * BATCH:(b + 1) * BATCH]
            for r in (0, 1):  # rank r trained positions r::2 of the global batch
                got = rows.query("epoch == @epoch and batch == @b and rank == @r")["idx"]
                assert sorted(got) == sorted(data.train_ids[ids[r::2]].tolist())
        for r in (0, 1):  # and wrote them to its own files
            f = runs_dir / "ddp" / "examples" / f"epoch={epoch:03d}" / f"compact-r{r}.parquet"
            assert set(pq.read_table(f, columns=["rank"])["rank"].to_pylist()) == {r}


@pytest.mark.slow
def test_final_weights_equal_across_ranks_and_rank0_checkpoint(ddp_run):
    runs_dir, weights = ddp_run
    r0, r1 = dumped(weights)
    assert same(r0, r1)  # parameters and BatchNorm statistics
    assert same(r0, checkpoint.load(runs_dir / "ddp" / "checkpoints" / "last.pt")["model"])


@pytest.mark.slow
def test_rank0_writes_summaries_and_c_max_auto_reduces_over_ranks(ddp_run, flags, tmp_path):
    from trainer import loop, run

    runs_dir, _ = ddp_run
    with store.open(runs_dir) as con:
        ep = con.query_df("SELECT epoch, n, c_max FROM epochs WHERE run = 'ddp' ORDER BY epoch")
        state = con.query_df("SELECT state FROM runs WHERE run = 'ddp'")["state"].tolist()
        events = con.query_df("SELECT kind, count(*) AS n FROM events WHERE run = 'ddp' GROUP BY kind")
    assert ep["epoch"].tolist() == list(range(EPOCHS)) and ep["n"].tolist() == [N] * EPOCHS
    counts = dict(zip(events["kind"], events["n"]))
    assert counts["start"] == 1 and counts["c_max_auto"] == 1 and counts["finish"] == 1  # once per run, not per rank
    assert state == ["finished"]
    # The same estimate on one process (the same initial model and examples, unsharded).
    cfg = run.config_from_args(run.build_parser().parse_args(flags))
    ctx = loop.setup(cfg, tmp_path, "one", resume=False)
    try:
        one = loop.estimate_c_max(ctx)
    finally:
        ctx.writer.close()
    assert ep["c_max"].tolist() == pytest.approx([one] * EPOCHS, rel=1e-6)


@pytest.mark.slow
def test_stop_mid_run_then_resume_under_torchrun_matches_uninterrupted(ddp_run, flags, tmp_path):
    _, want = ddp_run
    runs_dir, rd = tmp_path / "runs", tmp_path / "runs" / "stopped"
    p = torchrun(runs_dir, *flags, "--name", "stopped", wait=False)
    deadline = time.time() + 300
    while runs.read_status(rd).get("epoch", 0) < 1 and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    control.write(rd, stop=True)  # rank 0 reads it; every rank stops at the same batch
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    assert runs.read_status(rd)["state"] == "stopped"
    control.write(rd, stop=False)
    rc, out = torchrun(runs_dir, "--resume", "stopped", "--quiet", dump=tmp_path / "weights")
    assert rc == 0, out[-3000:]
    with store.open(runs_dir) as con:
        rows = con.query_df("SELECT epoch, idx FROM examples")
    assert len(rows) == EPOCHS * N and not rows.duplicated().any()
    r0, r1 = dumped(tmp_path / "weights")
    assert same(r0, r1) and same(r0, dumped(want)[0])


@pytest.mark.slow
def test_bad_config_under_torchrun_is_one_line_on_every_rank_and_creates_nothing(flags, tmp_path):
    rc, out = torchrun(tmp_path / "runs", *flags, "--name", "bad", "--eps", "5")
    assert rc != 0
    assert out.count("error: eps 5.0 is larger than the [0,1] pixel range") == 2
    assert not (tmp_path / "runs" / "bad").exists()


def test_every_rank_needs_an_example_of_every_batch():
    dist.check_batches(256, 64, 2)
    dist.check_batches(257, 64, 1)
    dist.check_batches(258, 64, 2)
    with pytest.raises(ConfigError, match="last batch has 1 of 257"):
        dist.check_batches(257, 64, 2)
    with pytest.raises(ConfigError, match="every batch needs >= 4"):
        dist.check_batches(256, 2, 4)
