"""Checkpoints: written atomically (temp file, fsync, rename), so a kill never leaves half a file."""
from __future__ import annotations

import io
from pathlib import Path

import torch

from store import runs


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; str(e) is one line for the user."""


def save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    runs.atomic_write_bytes(path, buf.getvalue(), fsync=True, site="checkpoint")


def load(path: Path, map_location="cpu") -> dict:
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:  # truncated or foreign files raise many different errors
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}); it may be corrupt") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"checkpoint {path} is not a FOSC Lab checkpoint")
    return state


def path(run_dir: Path, which: str = "last") -> Path:
    return run_dir / runs.CHECKPOINTS / f"{which}.pt"
