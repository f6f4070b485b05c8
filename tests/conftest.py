"""Shared fixtures: real data from ../shared/data (or $FOSC_DATA_ROOT), tiny real training runs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("FOSC_DATA_ROOT", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_npz() -> Path:
    path = SHARED_DATA / "mnist.npz"
    if not path.is_file():
        pytest.skip(f"needs the real MNIST at {path} (set FOSC_DATA_ROOT)")
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
