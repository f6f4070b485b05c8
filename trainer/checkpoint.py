"""Checkpoints: tensors and plain values only, written atomically, loaded without running code.

A checkpoint is a file in the runs folder, and runs folders get shared (a lab's NFS share, a
colleague's tarball, a downloaded checkpoint): every load uses ``torch.load(weights_only=True)``,
which unpickles only tensors, containers and plain values, so a pickle planted in ``last.pt`` is
refused instead of executed. Saving writes a temp file, fsyncs it, renames it and fsyncs the folder,
so neither a kill nor a power loss leaves half a file or loses the rename.
"""
from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import torch

from store import runs


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or not ours; str(e) is one line for the user."""


# What a FOSC Lab checkpoint holds (loop.save_checkpoint): name -> the type its value must have.
FIELDS = {"epoch": int, "model": dict, "optimizer": dict, "strategy": dict, "config": dict}
OPTIONAL = {"best_acc": (int, float), "control": dict}


def save(path: Path, state: dict) -> None:
    buf = io.BytesIO()
    torch.save(state, buf)
    # fsync=True: the file is synced before the rename and the folder after it (store.runs.atomic_write)
    runs.atomic_write_bytes(path, buf.getvalue(), fsync=True, site="checkpoint")


def load(path: Path, map_location="cpu") -> dict:
    """The checkpoint's state, or CheckpointError (one line): missing, corrupt, holding anything
    but tensors and plain values (never executed), or not shaped like ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if found:  # a pickle that would call or build something: what a planted payload does
            raise CheckpointError(f"checkpoint {path} asks to load {found.group(1)}, not only tensors and plain "
                                  "values; refused without running it (the file may be hostile)") from None
        raise CheckpointError(f"checkpoint {path} is unreadable (UnpicklingError); it may be corrupt") from None
    except Exception as e:  # truncated or foreign files raise many different errors
        raise CheckpointError(f"checkpoint {path} is unreadable ({type(e).__name__}); it may be corrupt") from None
    _check_shape(path, state)
    return state


def _check_shape(path: Path, state) -> None:
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"checkpoint {path} is not a FOSC Lab checkpoint")
    for name, kind in {**FIELDS, **OPTIONAL}.items():
        if name not in state and name in OPTIONAL:
            continue
        v = state.get(name)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise CheckpointError(f"checkpoint {path} is damaged: {name} is {type(v).__name__}, "
                                  f"not {getattr(kind, '__name__', 'a number')}")
    if state["epoch"] < 0:
        raise CheckpointError(f"checkpoint {path} is damaged: epoch {state['epoch']}")
    if not all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in state["model"].items()):
        raise CheckpointError(f"checkpoint {path} is damaged: its model holds values that are not tensors")


def path(run_dir: Path, which: str = "last") -> Path:
    return runs.checkpoint_path(run_dir, which)  # the store owns the name
