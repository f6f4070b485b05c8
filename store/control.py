"""The control file's format, and the one registry of numeric bounds of a run's settings.

``control.json`` in the run folder holds any of ``{"stop": true, "c_max": 0.3, "t_prime": 30,
"lr": 0.001}``. This module validates and writes it (atomically, merging with what is there); the
trainer polls it between batches (``trainer.control``).

``BOUNDS`` is the single list of what a number in a run's settings may be: ``RunConfig.validate``
(the trainer's flags and config.json), the control file (``validate``) and the dashboard's forms
(``dashboard.jobs.parse_number``) all read it, so a value the trainer refuses is refused everywhere,
with the same one-line message. It lives in the store because the dashboard may not import the
trainer and the store may import neither.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from store import runs


@dataclass(frozen=True)
class Bound:
    """A number of kind ``kind`` (int or float) in [lo, hi] (``lo_open``: lo itself excluded)."""
    kind: type
    lo: float
    hi: float
    lo_open: bool = False

    def describe(self) -> str:
        what = "a whole number" if self.kind is int else "a number"
        return f"{what} {'>' if self.lo_open else '>='} {_num(self.lo)} and <= {_num(self.hi)}"

    def check(self, label: str, value: Any, shown: Any = None) -> int | float:
        """``value`` as it comes from JSON or a flag: the right type, finite, in range; else ValueError.
        ``shown``: what the user typed, for the message (default: ``value``)."""
        got = _shown(value if shown is None else shown)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{label} must be {self.describe()}, got {got}")
        if isinstance(value, float) and not math.isfinite(value):  # ints are exact: no inf, no nan
            raise ValueError(f"{label} must be a finite number, got {got}")
        if self.kind is int and not isinstance(value, int):
            raise ValueError(f"{label} must be a whole number, got {got}")
        if value < self.lo or (self.lo_open and value == self.lo) or value > self.hi:
            raise ValueError(f"{label} must be {self.describe()}, got {got}")
        return self.kind(value)

    def parse(self, label: str, value: Any) -> int | float:
        """A form value (number or text such as '1e-3', 'nan', '12'): parsed, then ``check``ed."""
        shown, num = value, value
        if isinstance(value, str):
            try:
                num = float(value.strip())
            except ValueError:
                raise ValueError(f"{label} must be a number, got {_shown(value)}") from None
        if self.kind is int and isinstance(num, float) and math.isfinite(num):
            if num != int(num):
                raise ValueError(f"{label} must be a whole number, got {_shown(shown)}")
            num = int(num)
        return self.check(label, num, shown)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e10 else f"{x:g}"


def _shown(value: Any) -> str:
    """A value for a one-line message: its repr, cut short (a pasted megabyte stays off the screen)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_E = 1e6  # a generous ceiling for counts and weights that have no natural one: it only stops overflow
BOUNDS: dict[str, Bound] = {
    # the threat model and the training attack (linf eps is further capped at 1 by LINF_EPS_MAX)
    "eps": Bound(float, 0.0, 100.0, lo_open=True),
    "alpha": Bound(float, 0.0, 100.0, lo_open=True),
    "steps": Bound(int, 1, 10_000),
    # Dynamic and the other strategies
    "c_max": Bound(float, 0.0, _E),
    "c_max_batches": Bound(int, 1, _E),
    "t_prime": Bound(float, 0.0, _E, lo_open=True),
    "fgsm_epochs": Bound(int, 0, _E),
    "curriculum_patience": Bound(int, 1, _E),
    "fat_tau_epochs": Bound(int, 0, 100_000),   # each entry
    "trades_beta": Bound(float, 0.0, _E),
    "fat_omega": Bound(float, 0.0, 1.0),
    # optimisation
    "epochs": Bound(int, 1, 100_000),
    "batch_size": Bound(int, 1, 1 << 20),
    "lr": Bound(float, 0.0, 10.0, lo_open=True),
    "momentum": Bound(float, 0.0, 1.0),
    "weight_decay": Bound(float, 0.0, 1.0),
    "milestones": Bound(int, 1, 100_000),       # each entry
    "lr_gamma": Bound(float, 0.0, 1.0, lo_open=True),
    "seed": Bound(int, 0, 2**32 - 1),           # the loop derives per-epoch seeds from it: keep them in int64
    # data and machinery
    "n_train": Bound(int, 1, 10**9),
    "n_test": Bound(int, 1, 10**9),
    "eval_n": Bound(int, 1, 10**9),
    "heldout": Bound(int, 0, 10**7),
    "heldout_pgd_steps": Bound(int, 1, 10_000),
    "trajectory_examples": Bound(int, 0, _E),
    "flush_rows": Bound(int, 1, 10**9),
    "flush_seconds": Bound(float, 0.0, 86_400.0),
}
LINF_EPS_MAX = 1.0  # an linf ball wider than the [0,1] pixel range means nothing
CONTROL_KEYS = ("c_max", "t_prime", "lr")  # what a live run's control file may change


def label(name: str) -> str:
    """A field as flags and forms spell it (``t_prime`` -> ``t-prime``)."""
    return name.replace("_", "-")


def check(name: str, value: Any) -> int | float:
    """A setting's value from config.json or a flag, against its bound; ValueError (one line) otherwise."""
    return BOUNDS[name].check(label(name), value)


def parse(name: str, value: Any) -> int | float:
    """A setting typed into a form (text or number), against its bound; ValueError (one line) otherwise."""
    return BOUNDS[name].parse(label(name), value)


def validate(key: str, value: Any) -> float:
    """A control-file value as float, or ValueError with a one-line reason (the key as the file spells it)."""
    if key not in CONTROL_KEYS:
        raise ValueError(f"unknown control key {key!r}; known: stop, {', '.join(CONTROL_KEYS)}")
    return float(BOUNDS[key].check(key, value))


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
    except (runs.StoreError, OSError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}
