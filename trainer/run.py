"""``python -m trainer.run``: flags -> RunConfig -> the training loop.

Every RunConfig field is a flag (``--t-prime 40``, ``--no-random-start``, ``--milestones 20,40``);
``--preset`` fills the paper's settings first. ``--resume RUN`` continues a run from its last
checkpoint with its saved config. Exit codes: 0 finished or stopped, 2 bad input (one line, nothing
overwritten), 3 the runs folder cannot be written (disk full, read-only; resumable), 1 a crash.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from datetime import datetime, timezone
from pathlib import Path

from store import control as store_control
from store import runs
from store.writer import WriterError
from trainer.config import HELP, PRESETS, ConfigError, RunConfig, from_preset

from trainer.cli import EXIT_BAD_INPUT, EXIT_IO, OneLineParser


def _parse_value(kind, text: str):
    origin = typing.get_origin(kind)
    args = [a for a in typing.get_args(kind) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "") and type(None) in typing.get_args(kind):
            return None
        for a in args:
            try:
                return _parse_value(a, text)
            except (ValueError, argparse.ArgumentTypeError):
                continue
        raise argparse.ArgumentTypeError(f"invalid value {text!r}")
    if origin is tuple:
        return tuple(int(v) for v in text.split(",") if v.strip())
    if kind is str:
        return text
    if kind is float:
        return float(text)
    if kind is int:
        return int(text)
    raise argparse.ArgumentTypeError(f"invalid value {text!r}")


def _flag_type(kind, name):
    def parse(text):
        try:
            return _parse_value(kind, text)
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"invalid value for --{name}: {text!r}") from None
    return parse




def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainer.run", description="FOSC-instrumented adversarial training.")
    p.add_argument("--preset", choices=sorted(PRESETS), help="the paper's settings (or 'quick' for a CPU demo)")
    p.add_argument("--name", help="run name (default: strategy-dataset-time)")
    p.add_argument("--runs-dir", default=None, help=f"runs folder (default: ${runs.RUNS_DIR_ENV} or ./runs)")
    p.add_argument("--resume", metavar="RUN", help="continue RUN from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    hints = typing.get_type_hints(RunConfig)
    for f in dataclasses.fields(RunConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        hint = HELP.get(f.name)
        if kind is bool or kind == (bool | None):
            p.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=hint)
        else:
            p.add_argument(flag, dest=f.name, type=_flag_type(kind, flag[2:]), default=None,
                           metavar=f.name.upper(), help=hint)
    return p


def config_from_args(ns: argparse.Namespace) -> RunConfig:
    overrides = {f.name: getattr(ns, f.name) for f in dataclasses.fields(RunConfig)}
    return from_preset(ns.preset, **overrides)


def _progress(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    tty = sys.stderr.isatty()

    def make(n, epoch):
        return tqdm(total=n, desc=f"epoch {epoch}", unit="batch", leave=True, dynamic_ncols=True,
                    mininterval=0.5 if tty else 10.0)
    return make


def _new_run(ns, cfg: RunConfig, runs_dir: Path) -> tuple[Path, str]:
    from trainer import data, loop

    name = ns.name or f"{cfg.strategy}-{cfg.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    rd = runs.run_dir(runs_dir, name)
    if rd.exists():
        raise runs.StoreError(f"run {name!r} already exists in {runs_dir}; use --resume {name} or another --name")
    data.check_source(cfg.dataset, cfg.data_root)
    runs_dir.mkdir(parents=True, exist_ok=True)
    rd.mkdir()
    runs.write_json(rd / runs.CONFIG, cfg.to_dict())
    runs.write_json(rd / runs.META, {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": loop.git_commit(),
        "code_hash": loop.code_hash(), "argv": sys.argv[1:], "python": sys.version.split()[0],
        "torch": __import__("torch").__version__,
    })
    return rd, name


def _resume_run(ns, runs_dir: Path) -> tuple[Path, str, RunConfig]:
    from trainer import checkpoint

    rd = runs.run_dir(runs_dir, ns.resume)
    if not (rd / runs.CONFIG).is_file():
        raise runs.StoreError(f"no run {ns.resume!r} in {runs_dir}")
    cfg = _saved_config(rd)
    changes = {k: getattr(ns, k) for k in ("epochs", "device") if getattr(ns, k) is not None}
    others = [f.name for f in dataclasses.fields(RunConfig)
              if getattr(ns, f.name) is not None and f.name not in changes]
    if others or ns.preset:
        raise ConfigError(f"--resume keeps the run's saved config; only --epochs and --device may change (got --{others[0].replace('_', '-') if others else 'preset'})")
    if runs.effective_state(rd) == "running":
        raise runs.StoreError(f"run {ns.resume!r} is still running (pid {runs.read_status(rd).get('pid')})")
    if changes:
        cfg = cfg.replace(**changes).validate()
    # Every check before the first write: bad input leaves the run as it was.
    if checkpoint.path(rd).exists():
        checkpoint.load(checkpoint.path(rd))  # a corrupt checkpoint is a one-line error here, not a crash later
    if changes:
        runs.write_json(rd / runs.CONFIG, cfg.to_dict())
    if store_control.read(rd).get("stop"):
        store_control.write(rd, stop=False)  # the stop that ended the run must not end its resumption
    return rd, ns.resume, cfg


def _saved_config(rd: Path) -> RunConfig:
    try:
        return RunConfig.from_dict(runs.read_json(rd / runs.CONFIG)).validate()
    except TypeError as e:  # a field of the wrong type or shape
        raise ConfigError(f"{rd / runs.CONFIG} is not a valid run config ({e})") from None


def _prepare(ns, runs_dir: Path) -> tuple[Path, str, RunConfig]:
    if ns.resume:
        return _resume_run(ns, runs_dir)
    cfg = config_from_args(ns)
    return (*_new_run(ns, cfg, runs_dir), cfg)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from trainer import dist
    from trainer.checkpoint import CheckpointError
    from trainer.data import DataError

    try:
        runs_dir = Path(ns.runs_dir) if ns.runs_dir else runs.default_runs_dir()
        rd, name, cfg = dist.from_rank0(lambda: _prepare(ns, runs_dir))  # under torchrun: once, on rank 0
    except (ConfigError, DataError, runs.StoreError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"error: cannot create the run in {ns.runs_dir or runs.default_runs_dir()}: {e.strerror or e}", file=sys.stderr)
        return EXIT_IO

    from trainer import loop

    print(f"run {name}: {cfg.strategy} on {cfg.dataset} ({cfg.model}), {cfg.epochs} epochs -> {rd}", file=sys.stderr)
    try:
        state = loop.train(cfg, rd, name, resume=bool(ns.resume), progress=_progress(ns.quiet))
    except (DataError, CheckpointError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (WriterError, OSError) as e:
        print(f"error: {e}. The run stopped; free space or fix permissions, then: "
              f"python -m trainer.run --resume {name} --runs-dir {runs_dir}", file=sys.stderr)
        return EXIT_IO
    print(f"run {name} {state}. Query it: python -m store.sql --runs-dir {runs_dir} "
          f"\"SELECT epoch, fosc_mean, steps_mean, heldout_pgd_acc FROM epochs WHERE run = '{name}' ORDER BY epoch\"",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
