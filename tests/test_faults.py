"""Crash/resume under fault injection: SIGKILL at precise sites and at random times, disk full.

One uninterrupted reference run is trained once; every faulted run uses the same config and seed,
is resumed (``python -m trainer.run --resume NAME``) until it finishes, and must end with exactly one
row per (epoch, example), the reference's rows bit for bit, and the reference's final model
(torch.equal on every tensor). Kill points land precisely through ``FOSC_FAULT=site:N`` (see
store/faults.py). A dashboard-like reader loops over store.open and count queries all along.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import store
from store import runs
from trainer import checkpoint

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 3
FLAGS = ["--preset", "quick", "--strategy", "dynamic", "--c-max", "auto", "--t-prime", "2", "--dataset", "mnist",
         "--epochs", str(EPOCHS), "--n-train", "256", "--batch-size", "64", "--steps", "5", "--heldout", "64",
         "--heldout-pgd-steps", "3", "--n-test", "64", "--no-eval-at-end", "--flush-rows", "32", "--device", "cpu", "--quiet"]
# Fewest arrivals at each site in one epoch (4 batches of 64 rows; a flush at every 32 rows; one
# compaction per table; one summary; 'last' and, when the held-out accuracy improved, 'best').
PER_EPOCH = {"batch": 4, "flush": 4, "compact": 2, "compact-unlink": 2, "summary": 1, "checkpoint": 1}
SITES = ["batch", "flush", "compact", "compact-unlink", "summary", "checkpoint"]

READER = r"""
import sys, time, traceback
from pathlib import Path
import store
runs_dir, stop, out = sys.argv[1:4]
n = errors = 0
while not Path(stop).exists():
    try:
        with store.open(runs_dir, threads=1) as con:
            con.query_df("SELECT count(*) FROM examples")
            con.query_df("SELECT epoch, count(*) n, count(DISTINCT idx) u FROM examples GROUP BY epoch")
            con.query_df("SELECT * FROM epochs ORDER BY epoch")
            con.query_df("SELECT run, state, epoch FROM runs")
        n += 1
    except Exception:
        errors += 1
        sys.stderr.write(traceback.format_exc())
    time.sleep(0.25)  # a dashboard refreshes every few seconds; this is busier, not a CPU hog
Path(out).write_text(f"{n} {errors}")
"""


def trainer(runs_dir: Path, *args: str, fault: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("FOSC_FAULT", None)
    if fault:
        env["FOSC_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "trainer.run", "--runs-dir", str(runs_dir), *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_to_end(runs_dir: Path, *args: str, fault: str | None = None) -> tuple[int, str]:
    p = trainer(runs_dir, *args, fault=fault)
    _, err = p.communicate(timeout=300)
    return p.returncode, err


def done_epochs(run: Path) -> int:
    """Epochs saved in the resume checkpoint (what a resumed process will not redo)."""
    path = checkpoint.path(run)
    return checkpoint.load(path)["epoch"] + 1 if path.exists() else 0


def final_model(run: Path) -> dict:
    return checkpoint.load(checkpoint.path(run))["model"]


def examples(runs_dir: Path, name: str):
    with store.open(runs_dir) as con:
        return con.query_df("SELECT epoch, idx, rank, batch, fosc, loss, steps, correct FROM examples "
                            "WHERE run = ? ORDER BY epoch, idx", [name])


def assert_same_as_reference(runs_dir: Path, name: str, reference: Path) -> None:
    got, want = examples(runs_dir, name), examples(reference.parent, reference.name)
    assert len(got) == EPOCHS * 256
    assert not got.duplicated(["epoch", "idx"]).any()  # exactly one row per (epoch, example)
    cols = ["epoch", "idx", "batch", "fosc", "loss", "steps", "correct"]
    assert got[cols].equals(want[cols])
    model, ref = final_model(runs_dir / name), final_model(reference)
    assert model.keys() == ref.keys()
    assert all(torch.equal(model[k], ref[k]) for k in ref)
    with store.open(runs_dir) as con:
        ep = con.query_df("SELECT epoch, n FROM epochs WHERE run = ? ORDER BY epoch", [name])
    assert ep["epoch"].tolist() == list(range(EPOCHS)) and ep["n"].tolist() == [256] * EPOCHS
    assert runs.effective_state(runs_dir / name) == "finished"
    assert not list((runs_dir / name).rglob("*.tmp"))


@pytest.fixture(scope="module")
def flags(mnist_npz) -> list[str]:
    return [*FLAGS, "--data-root", str(mnist_npz)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, flags) -> Path:
    d = tmp_path_factory.mktemp("reference")
    rc, err = run_to_end(d, *flags, "--name", "ref")
    assert rc == 0, err
    return d / "ref"


@pytest.fixture
def dashboard_reader(tmp_path):
    """A reader process looping like the dashboard; yields a check that it never errored."""
    runs_dir, stop, out = tmp_path / "runs", tmp_path / "stop", tmp_path / "reader.txt"
    runs_dir.mkdir()
    p = subprocess.Popen([sys.executable, "-c", READER, str(runs_dir), str(stop), str(out)], cwd=ROOT,
                         stderr=subprocess.PIPE, text=True)

    def finish() -> int:
        stop.touch()
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        n, errors = map(int, out.read_text().split())
        assert errors == 0, err
        return n
    yield runs_dir, finish
    if p.poll() is None:
        p.kill()
        p.wait()


FORK_SERVER = r"""
import json, os, sys
import torch, torch._dynamo  # imports only: no torch op may run before a fork
from trainer import loop, run
from store import faults
for line in sys.stdin:
    spec, log, argv = json.loads(line)
    pid = os.fork()
    if pid == 0:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        faults.configure(spec)
        code = 1
        try:
            code = run.main(argv)
        finally:
            sys.stderr.flush()
            os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    """``forks(runs_dir, *args, fault=...)`` -> (returncode, stderr) of ``run.main(args)`` in a fresh process
    forked from one that already imported torch and the trainer: the same code path as
    ``python -m trainer.run`` without paying the ~4 s of imports for each of the many kills."""
    logs = tmp_path_factory.mktemp("fork-logs")
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env={k: v for k, v in os.environ.items()
                                                                      if k != "FOSC_FAULT"})
    n = iter(range(10**6))

    def call(runs_dir: Path, *args: str, fault: str | None = None) -> tuple[int, str]:
        log = logs / f"{next(n)}.log"
        server.stdin.write(json.dumps([fault, str(log), ["--runs-dir", str(runs_dir), *args]]) + "\n")
        server.stdin.flush()
        rc = int(server.stdout.readline())
        return rc, log.read_text()
    yield call
    server.stdin.close()
    server.wait(timeout=30)


def kill_plan(seed: int = 7) -> list[str]:
    """12 precise kill points: every site at least once, the rest drawn; counts drawn per process."""
    rng = random.Random(seed)
    sites = SITES + [rng.choice(SITES) for _ in range(6)]
    rng.shuffle(sites)
    return sites


@pytest.mark.slow
def test_sigkill_at_sites_and_random_times_then_resume_equals_uninterrupted(reference, flags, dashboard_reader, forks):
    runs_dir, reader_ok = dashboard_reader
    rng = random.Random(11)
    name, started, landed = "faulty", False, []
    for site in kill_plan():
        left = EPOCHS - done_epochs(runs_dir / name)
        # Mostly within the first epoch this process trains, sometimes one epoch further on (progress).
        count = rng.randint(1, PER_EPOCH[site]) + (PER_EPOCH[site] if left >= 2 and rng.random() < 0.3 else 0)
        args = ("--resume", name, "--quiet") if started else (*flags, "--name", name)
        rc, err = forks(runs_dir, *args, fault=f"{site}:{count}")
        assert rc == -signal.SIGKILL, f"kill at {site}:{count} did not land (rc {rc}): {err[-500:]}"
        landed.append((site, count, EPOCHS - left))
        started = True
    assert len(landed) >= 10 and {s for s, _, _ in landed} == set(SITES)
    for _ in range(3):  # plus kills at seeded random times, wherever they land
        p = trainer(runs_dir, "--resume", name, "--quiet")
        time.sleep(rng.uniform(3.0, 9.0))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=60)
    rc, err = run_to_end(runs_dir, "--resume", name, "--quiet")
    assert rc == 0, err
    assert_same_as_reference(runs_dir, name, reference)
    assert reader_ok() >= 5  # the reader did real work all along, and never errored


@pytest.mark.slow
@pytest.mark.parametrize("faults", [["flush:6:ENOSPC", "checkpoint:2:ENOSPC", "summary:2:EROFS", "compact:1:ENOSPC"]],
                         ids=["disk-full-then-read-only"])
def test_disk_full_or_read_only_stops_resumably(tmp_path, reference, flags, forks, faults):
    runs_dir, name = tmp_path / "runs", "full"
    for i, fault in enumerate(faults):
        before = done_epochs(runs_dir / name)
        args = ("--resume", name, "--quiet") if i else (*flags, "--name", name)
        rc, err = forks(runs_dir, *args, fault=fault)
        assert rc == 3, err
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "Traceback" not in err
        assert ("No space left" in lines[0]) == ("ENOSPC" in fault)
        assert f"--resume {name} --runs-dir {runs_dir}" in lines[0]
        status = json.loads((runs_dir / name / runs.STATUS).read_text())  # still valid JSON
        assert status["state"] == "failed" and "injected" in status["message"]
        assert done_epochs(runs_dir / name) >= before  # the checkpoint loads and never went back
    rc, err = run_to_end(runs_dir, "--resume", name, "--quiet")  # the fault is cleared
    assert rc == 0, err
    assert_same_as_reference(runs_dir, name, reference)
