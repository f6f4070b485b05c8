"""The run's control file: how a user (or the dashboard) steers a live run.

``control.json`` in the run folder holds any of ``{"stop": true, "c_max": 0.3, "t_prime": 30,
"lr": 0.001}``. The trainer looks at it between batches (one stat call; the file is read only when
it changed) and applies each value that differs from what it last applied. A malformed file or a
bad value is reported (as an event) and ignored: it never stops training.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

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


class ControlFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._seen: int | None = None
        self.applied: dict[str, float] = {}
        self.stop = False
        self.changed_schedule = False

    def poll(self) -> list[tuple[str, Any]]:
        """New (key, value) pairs since the last poll; ('error', message) for a bad file or value."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return []
        stamp = st.st_mtime_ns ^ st.st_size
        if stamp == self._seen:
            return []
        self._seen = stamp
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict):
                raise ValueError("the control file must hold a JSON object")
        except (OSError, ValueError) as e:
            return [("error", f"control file ignored: {str(e).splitlines()[0]}")]
        out: list[tuple[str, Any]] = []
        if data.get("stop") is True:
            self.stop = True
        for key, value in data.items():
            if key == "stop":
                continue
            try:
                v = validate(key, value)
            except ValueError as e:
                out.append(("error", str(e)))
                continue
            if self.applied.get(key) != v:
                self.applied[key] = v
                out.append((key, v))
        return out

    def state_dict(self) -> dict:
        return {"applied": dict(self.applied)}

    def load_state_dict(self, state: dict) -> None:
        self.applied = dict(state.get("applied", {}))


def write(run_dir: Path, **values: Any) -> dict:
    """Merge ``values`` into a run's control file (validated, atomic). Used by the CLI and dashboard."""
    from store import runs

    path = Path(run_dir) / runs.CONTROL
    current = runs.read_json(path, default={}) or {}
    for key, value in values.items():
        if key == "stop":
            current["stop"] = bool(value)
        else:
            current[key] = validate(key, value)
    runs.write_json(path, current)
    return current
