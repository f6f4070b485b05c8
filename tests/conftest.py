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
