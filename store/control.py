"""The control file's format: how a user or the dashboard steers a live run.

``control.json`` in the run folder holds any of ``{"stop": true, "c_max": 0.3, "t_prime": 30,
"lr": 0.001}``. This module validates and writes it (atomically, merging with what is there); the
trainer polls it between batches (``trainer.control``).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from store import runs

KEYS = {"c_max": (0.0, False), "t_prime": (0.0, True), "lr": (0.0, True)}  # key -> (bound, strictly above)


def validate(key: str, value: Any) -> float:
    """A control value as float, or ValueError with a one-line reason."""
    if key not in KEYS:
        raise ValueError(f"unknown control key {key!r}; known: stop, {', '.join(KEYS)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    bound, strict = KEYS[key]
    if value < bound or (strict and value == bound):
        raise ValueError(f"{key} must be {'>' if strict else '>='} {bound}, got {value!r}")
    return float(value)


def write(run_dir: Path, **values: Any) -> dict:
    """Merge ``values`` into a run's control file (each validated first; atomic replace)."""
    path = Path(run_dir) / runs.CONTROL
    clean = {k: (bool(v) if k == "stop" else validate(k, v)) for k, v in values.items()}
    try:
        current = runs.read_json(path, default={}) or {}
    except runs.StoreError:
        current = {}
    if not isinstance(current, dict):
        current = {}
    current.update(clean)
    runs.write_json(path, current)
    return current


def read(run_dir: Path) -> dict:
    try:
        data = runs.read_json(Path(run_dir) / runs.CONTROL, default={}) or {}
    except runs.StoreError:
        return {}
    return data if isinstance(data, dict) else {}
