"""Benchmarks: every speed claim is a ratio against a plain reference measured in the same run.

Shared helpers: interleaved repetitions with medians (the machines are noisy), a one-line
description of the machine, and an updater for one subsection of docs/BENCHMARKS.md that leaves
every other part of the file as it is.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
# FOSC_BENCH_DOC: write --write-doc figures into a copy instead (scripts/device_check.sh does, so a
# dry run on this machine never edits the real doc).
DOC = Path(os.environ.get("FOSC_BENCH_DOC") or ROOT / "docs" / "BENCHMARKS.md")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(blocks: dict[str, Callable[[], None]], reps: int, device: torch.device,
                clock: str = "wall") -> dict[str, list[float]]:
    """Seconds per call of each block, ``reps`` times, in an order rotated every repetition so that
    a slow spell of a shared machine is spread over all blocks rather than landing on one. A block's
    ``after`` attribute, if any, runs untimed after it (e.g. an end-of-epoch write).

    ``clock='cpu'`` counts the process's CPU seconds (all its threads, the store writer's too)
    instead of wall seconds: on a CPU shared with other jobs, wall time mostly measures the
    scheduler, while CPU time measures the work (use one torch thread, so that no thread spins
    waiting for a descheduled sibling)."""
    now = CLOCKS[clock]
    names = list(blocks)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        for name in names[r % len(names):] + names[:r % len(names)]:
            sync(device)
            t0 = now()
            blocks[name]()
            sync(device)
            out[name].append(now() - t0)
            getattr(blocks[name], "after", lambda: None)()
    return out


def choose_clock(args) -> None:
    """CPU seconds with one torch thread on the CPU (wall time is useless on a shared 2-core
    machine), wall seconds on CUDA; prints the machine line every figure is reported with."""
    args.clock = args.clock or ("cpu" if args.device == "cpu" else "wall")
    if args.clock == "cpu" and args.device == "cpu" and not args.threads:
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"{environment(torch.device(args.device))}; clock: {args.clock} seconds", flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def environment(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return f"{device.type} ({what}), torch {torch.__version__}, Python {platform.python_version()}"


def command_line() -> str:
    mod = Path(sys.argv[0]).stem
    return " ".join(["python -m bench." + mod] + sys.argv[1:])


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def update_doc(section: str, subsection: str, body: str, path: Path = DOC) -> None:
    """Replace (or add) ``### subsection`` inside ``## section`` of the doc; nothing else changes.

    A subsection runs to the next ``###`` or ``##`` heading; a section to the next ``##``."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    block = f"### {subsection}\n\n{body.strip()}\n\n"
    sec = re.search(rf"^## {re.escape(section)}[ \t]*\n", text, flags=re.M)
    if sec is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.rstrip("\n") + f"\n\n## {section}\n\n{block}")
        return
    nxt = re.search(r"^## ", text[sec.end():], flags=re.M)
    end = sec.end() + nxt.start() if nxt else len(text)
    part = text[sec.end():end]
    sub = re.search(rf"^### {re.escape(subsection)}[ \t]*\n", part, flags=re.M)
    if sub is None:
        part = part.rstrip("\n") + "\n\n" + block
    else:
        nsub = re.search(r"^##", part[sub.end():], flags=re.M)
        stop = sub.end() + nsub.start() if nsub else len(part)
        part = part[:sub.start()] + block + part[stop:].lstrip("\n")
    path.write_text(text[:sec.end()] + part + text[end:])
