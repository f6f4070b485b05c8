"""The run's control file: how a user (or the dashboard) steers a live run.

``control.json`` in the run folder holds any of ``{"stop": true, "c_max": 0.3, "t_prime": 30,
"lr": 0.001}``. The trainer looks at it between batches (one stat call; the file is read only when
it changed) and applies each value that differs from what it last applied. A malformed file or a
bad value (outside the bounds of store.control.BOUNDS, the same as the config's) is reported (as an
event) and ignored: it never stops training, and since it is never applied a resume does not apply
it either.
"""
from __future__ import annotations

import json
import os
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from store.control import validate  # the format and the bounds live in the store


class ControlFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._seen: int | None = None
        self.applied: dict[str, float] = {}
        self.stop = False

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
        """What a checkpoint says was applied; only values that pass today's bounds are kept (a
        checkpoint is a file in the runs folder, as untrusted as the control file)."""
        applied = state.get("applied", {}) if isinstance(state, dict) else {}
        self.applied = {}
        for key, value in (applied.items() if isinstance(applied, dict) else ()):
            try:
                self.applied[key] = validate(key, value)
            except ValueError:
                continue



@contextmanager
def stop_at_once(exc: type[BaseException], pending: bool = False):
    """Inside the block, SIGTERM and SIGINT raise ``exc`` at once instead of setting a flag for the
    next batch: for phases with no batch boundary of the training loop (the end-of-run evaluation),
    where a flag would be read only after minutes. ``pending``: a stop already asked for raises now."""
    if pending:
        raise exc()

    def handler(signum, frame):
        raise exc()
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: the caller's flag handling stays in charge
            pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
