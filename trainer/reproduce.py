"""``python -m trainer.reproduce --table mnist|cifar10|mnist-cpu``: the paper's Table 1, resumable.

Trains every strategy of a table as its own ``python -m trainer.run`` process (``--parallel N`` at
once), evaluates each run's last and best checkpoints with ``python -m trainer.evaluate``, then
writes the table (markdown + CSV) and the FOSC figures from the logs into ``--out``. Re-running the
same command continues: finished runs are skipped, stopped or killed runs resume from their last
checkpoint, and attacks already evaluated on the current checkpoint are not redone.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from store import runs
from trainer.cli import EXIT_BAD_INPUT, OneLineParser

# The tables themselves live in trainer.tables (results.py reads them too); re-exported here.
from store.strategies import NAMES as STRATEGY_NAMES  # the one registry
from trainer.tables import (ALL_STRATEGIES, PUBLIC_TABLES, TABLES, TRAIN_ORDER, TableSpec,  # noqa: F401
                            run_name)


def train_argv(spec: TableSpec, strategy: str, name: str, runs_dir: Path, data_root: str | None,
               device: str | None) -> list[str]:
    """The ``python -m trainer.run`` argv of one strategy of a table (a fresh run)."""
    argv = ["--preset", spec.preset, *spec.train_flags, "--strategy", strategy, "--name", name,
            "--runs-dir", str(runs_dir), "--no-eval-at-end", "--quiet"]
    if spec.eval_n:
        argv += ["--eval-n", str(spec.eval_n)]
    if data_root:
        argv += ["--data-root", data_root]
    if device:
        argv += ["--device", device]
    return argv


def training_step(spec: TableSpec, strategy: str, name: str, runs_dir: Path, data_root: str | None,
                  device: str | None) -> list[str] | None:
    """What the run needs next: a fresh start, a resume, or nothing (None) when it has finished."""
    rd = runs.run_dir(runs_dir, name)
    if not (rd / runs.CONFIG).is_file():
        if rd.exists() and not any(rd.iterdir()):
            rd.rmdir()  # an empty folder a killed start left behind
        return train_argv(spec, strategy, name, runs_dir, data_root, device)
    state = runs.effective_state(rd)
    if state == "finished":
        return None
    if state == "running":
        raise runs.StoreError(f"run {name!r} is still running (pid {runs.read_status(rd).get('pid')}); "
                              f"wait for it or stop it, then re-run")
    argv = ["--resume", name, "--runs-dir", str(runs_dir), "--quiet"]
    return argv + (["--device", device] if device else [])


@dataclass
class Job:
    name: str
    argv: list[str]                 # after ``python -m``
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    wall_s: float = 0.0
    rc: int | None = None
    env: dict = field(default_factory=dict)


def run_jobs(jobs: list[Job], parallel: int, say=print) -> list[Job]:
    """Run the jobs, ``parallel`` at a time, each logging to its own file; returns them with rc set."""
    pending, active = list(jobs), []
    while pending or active:
        while pending and len(active) < parallel:
            job = pending.pop(0)
            job.log.parent.mkdir(parents=True, exist_ok=True)
            with open(job.log, "ab") as log:
                job.proc = subprocess.Popen([sys.executable, "-m", *job.argv], stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **job.env}, cwd=Path(__file__).resolve().parent.parent)
            job.started = time.time()
            say(f"started {job.name}: python -m {' '.join(job.argv)}  (log {job.log})")
            active.append(job)
        time.sleep(1.0)
        for job in list(active):
            rc = job.proc.poll()
            if rc is None:
                continue
            job.rc, job.wall_s = rc, time.time() - job.started
            active.remove(job)
            say(f"{'finished' if rc == 0 else f'FAILED (exit {rc})'} {job.name} in {job.wall_s:.0f} s")
    return jobs


def thread_env(device: str | None, parallel: int) -> dict:
    """On the CPU, share the cores between the parallel runs instead of oversubscribing them."""
    if device not in (None, "cpu") and device != "auto":
        return {}
    n = max(1, (os.cpu_count() or 1) // max(parallel, 1))
    return {"OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def train_all(table: str, spec: TableSpec, strategies, runs_dir: Path, data_root, device, parallel: int,
              say=print) -> list[Job]:
    jobs = []
    # The costly strategies start first, so --parallel finishes sooner.
    for s in sorted(strategies, key=TRAIN_ORDER.index):
        name = run_name(table, s)
        argv = training_step(spec, s, name, runs_dir, data_root, device)
        if argv is None:
            say(f"{name}: finished earlier, skipped")
            continue
        jobs.append(Job(name, ["trainer.run", *argv], runs_dir / "logs" / f"{name}.train.log",
                        env=thread_env(device, parallel)))
    return run_jobs(jobs, parallel, say)


# ---- evaluation: only what is missing or older than the checkpoint ------------------------------
def _has_eval(rd: Path, which: str, attack: str, n: int | None) -> bool:
    """A complete row of this code (stratified subset, not partial) of ``n`` examples, newer than the checkpoint."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from store import evals
    from trainer import checkpoint

    f = evals.eval_file(rd, which, "white-box", attack)
    ck = checkpoint.path(rd, which)
    if not f.is_file() or (ck.is_file() and f.stat().st_mtime < ck.stat().st_mtime):
        return False
    try:
        row = pq.read_table(f).to_pylist()[0]
    except (OSError, IndexError, pa.ArrowException):  # unreadable or empty: redo it
        return False
    subset = row.get("subset") or ""
    return not row.get("partial", True) and (subset == "all" if n is None else
                                             subset.startswith("stratified") and row["n"] == n)


def eval_requests(spec: TableSpec, rd: Path) -> list[tuple[str, tuple[str, ...], int | None]]:
    """(checkpoint flag, attacks, n) still to evaluate for one finished run."""
    out = []
    white = tuple(a for a in spec.attacks if not all(_has_eval(rd, w, a, spec.eval_n) for w in ("last", "best")))
    if white:
        out.append(("both", white, spec.eval_n))
    if spec.aa_attack and not _has_eval(rd, "last", spec.aa_attack, spec.aa_n):
        out.append(("last", (spec.aa_attack,), spec.aa_n))
    return out


def eval_argv(name: str, runs_dir: Path, which: str, attacks, n: int | None, data_root, device) -> list[str]:
    """The ``python -m trainer.evaluate`` argv of one evaluation request (``--n``: a stratified sample)."""
    argv = ["trainer.evaluate", name, "--runs-dir", str(runs_dir), "--checkpoint", which,
            "--attacks", ",".join(attacks), "--quiet"]
    argv += (["--n", str(n)] if n else []) + (["--data-root", data_root] if data_root else [])
    return argv + (["--device", device] if device else [])


def evaluate_all(table: str, spec: TableSpec, strategies, runs_dir: Path, data_root, device, parallel: int,
                 say=print) -> list[Job]:
    jobs = []
    for s in sorted(strategies, key=TRAIN_ORDER.index):
        name = run_name(table, s)
        for which, attacks, n in eval_requests(spec, runs_dir / name):
            argv = eval_argv(name, runs_dir, which, attacks, n, data_root, device)
            jobs.append(Job(f"{name}:{'+'.join(attacks)}", argv, runs_dir / "logs" / f"{name}.eval.log",
                            env=thread_env(device, parallel)))
    # The white-box columns of every run first; the costly independent column last.
    jobs.sort(key=lambda j: spec.aa_attack is not None and j.name.endswith(":" + spec.aa_attack))
    return run_jobs(jobs, parallel, say)




def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainer.reproduce", description="Train and evaluate every strategy of a paper table.")
    p.add_argument("--table", required=True, choices=list(TABLES), metavar="{" + ",".join(PUBLIC_TABLES) + "}")
    p.add_argument("--strategies", default=None, help="comma-separated subset (default: the table's)")
    p.add_argument("--runs-dir", default=None, help="default: $FOSC_RUNS_DIR/<table> or runs/<table>")
    p.add_argument("--data-root", default=None, help="dataset .npz or folder (passed to trainer.run)")
    p.add_argument("--out", default=None, help="table and figures folder (default docs/results/<table>)")
    p.add_argument("--parallel", type=int, default=1, help="strategies trained at once")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda"))
    p.add_argument("--train-only", action="store_true", help="stop after training")
    p.add_argument("--no-figures", action="store_true", help="table only (figures need DuckDB and the per-example logs)")
    return p


def parse(argv) -> tuple[argparse.Namespace, TableSpec, tuple[str, ...], Path]:
    ns = build_parser().parse_args(argv)
    spec = TABLES[ns.table]
    strategies = spec.strategies
    if ns.strategies:
        strategies = tuple(s.strip() for s in ns.strategies.split(",") if s.strip())
        bad = [s for s in strategies if s not in STRATEGY_NAMES]
        if bad or not strategies:
            raise runs.StoreError(f"unknown strategy {bad[0] if bad else ns.strategies!r}; "
                                  f"choose from: {', '.join(STRATEGY_NAMES)}")
    if ns.parallel < 1:
        raise runs.StoreError(f"--parallel must be >= 1, got {ns.parallel}")
    # Absolute, since the training and evaluation processes run from the repository root.
    runs_dir = (Path(ns.runs_dir) if ns.runs_dir else runs.default_runs_dir() / ns.table).resolve()
    if ns.data_root:
        ns.data_root = str(Path(ns.data_root).expanduser().resolve())
    return ns, spec, strategies, runs_dir


def main(argv: list[str] | None = None) -> int:
    try:
        ns, spec, strategies, runs_dir = parse(argv)
        if ns.data_root and not Path(ns.data_root).exists():
            raise runs.StoreError(f"--data-root {ns.data_root} does not exist")
        runs_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        jobs = train_all(ns.table, spec, strategies, runs_dir, ns.data_root, ns.device, ns.parallel,
                         say=lambda m: print(m, file=sys.stderr))
    except runs.StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    failed = [j for j in jobs if j.rc != 0]
    if failed:
        print(f"error: training failed for {', '.join(j.name for j in failed)}; see {failed[0].log}; "
              f"re-run the same command to resume", file=sys.stderr)
        return 1
    print(f"training done in {time.time() - t0:.0f} s", file=sys.stderr)
    if ns.train_only:
        return 0
    jobs = evaluate_all(ns.table, spec, strategies, runs_dir, ns.data_root, ns.device, ns.parallel,
                        say=lambda m: print(m, file=sys.stderr))
    failed = [j for j in jobs if j.rc != 0]
    if failed:
        print(f"error: evaluation failed for {', '.join(j.name for j in failed)}; see {failed[0].log}", file=sys.stderr)
        return 1
    from trainer import results

    out = Path(ns.out) if ns.out else Path("docs") / "results" / ns.table
    written = results.write_all(ns.table, spec, strategies, runs_dir, out, figures=not ns.no_figures,
                                command=_command(argv))
    print(f"wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def _command(argv) -> str:
    return "python -m trainer.reproduce " + " ".join(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
