"""Test-only fault injection at named sites: kill the process, or fail a write, at a precise point.

``FOSC_FAULT="site:N[:action][,site:N[:action]...]"`` makes the N-th time this process reaches
``site`` do ``action``: ``kill`` (the default: SIGKILL to itself, as a preemption or the OOM killer
would) or an errno name such as ``ENOSPC`` or ``EROFS`` (an OSError, as a full or read-only disk
would raise). Unset, ``hit`` is one ``None`` check, so the sites cost nothing in normal runs.

Sites (a tests/test_faults.py kill point each): ``batch`` (trainer, after the attack and before the
update), ``flush`` (writer, chunk written to its temp file, before the rename), ``compact``
(compacted file written, before the rename), ``compact-unlink`` (compacted file in place, chunks not
yet deleted), ``summary`` (epoch summary, before the rename), ``checkpoint`` (before the rename).
It lives in the store because the store's writer calls it and the store never imports the trainer.
"""
from __future__ import annotations

import errno
import os
import signal
import threading

FAULT_ENV = "FOSC_FAULT"


def _parse(text: str | None) -> dict[str, tuple[int, str]] | None:
    if not text:
        return None
    plan = {}
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise ValueError(f"{FAULT_ENV}: expected site:N[:kill|ENOSPC|...], got {item!r}")
        action = parts[2] if len(parts) == 3 else "kill"
        if action != "kill" and not hasattr(errno, action):
            raise ValueError(f"{FAULT_ENV}: unknown action {action!r} (kill or an errno name)")
        plan[parts[0]] = (int(parts[1]), action)
    return plan


_plan = _parse(os.environ.get(FAULT_ENV))
_counts: dict[str, int] = {}
_lock = threading.Lock()  # the writer thread and the training thread both reach sites


def configure(spec: str | None) -> None:
    """Replace the plan (as if ``FOSC_FAULT`` had been ``spec`` at start) and reset the counts;
    for a process forked from one that imported the store before the plan was known."""
    global _plan
    _plan = _parse(spec)
    _counts.clear()


def hit(site: str, path: object = None) -> None:
    """Count one arrival at ``site``; do the planned action if this is the planned arrival."""
    if _plan is None or site not in _plan:
        return
    with _lock:
        _counts[site] = n = _counts.get(site, 0) + 1
    count, action = _plan[site]
    if n != count:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    code = getattr(errno, action)
    raise OSError(code, f"{os.strerror(code)} (injected by {FAULT_ENV} at {site})", str(path) if path else None)
