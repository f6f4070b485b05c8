"""``python -m trainer.run``: flags -> RunConfig -> the training loop.

Every RunConfig field is a flag (``--t-prime 40``, ``--no-random-start``, ``--milestones 20,40``);
``--preset`` fills the paper's settings first. ``--resume RUN`` continues a run from its last
checkpoint with its saved config. Exit codes: 0 finished or stopped, 2 bad input (one line, nothing
overwritten), 3 the runs folder cannot be written (disk full, read-only; resumable), 1 a crash.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import shutil
import subprocess
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

CODE_ROOT = Path(__file__).resolve().parent.parent


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
    from trainer import data
    from trainer.device import pick_device

    name = ns.name or f"{cfg.strategy}-{cfg.dataset}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    rd = runs.run_dir(runs_dir, name)
    if rd.exists():
        raise runs.StoreError(f"run {name!r} already exists in {runs_dir}; use --resume {name} or another --name")
    pick_device(cfg.device)  # --device cuda without CUDA: refused here, not in a half-made run
    data.check_source(cfg.dataset, cfg.data_root)
    runs_dir.mkdir(parents=True, exist_ok=True)
    rd.mkdir()
    runs.write_json(rd / runs.CONFIG, cfg.to_dict())
    runs.write_json(rd / runs.META, {
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "git_commit": git_commit(),
        "code_hash": code_hash(), "argv": sys.argv[1:], "python": sys.version.split()[0],
        "torch": __import__("torch").__version__,
    })
    return rd, name


def code_hash() -> str:
    """The run record's code identity: SHA-256 over the paths and contents of trainer/ and store/."""
    h = hashlib.sha256()
    for sub in ("trainer", "store"):
        for p in sorted((CODE_ROOT / sub).rglob("*.py")):
            h.update(str(p.relative_to(CODE_ROOT)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def git_commit() -> str | None:
    """HEAD, with '-dirty' if tracked files have uncommitted changes; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CODE_ROOT, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=CODE_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class AlreadyFinished(Exception):
    """--resume of a run that finished every epoch and its evaluation (exit 0, nothing changes)."""

    def __init__(self, name: str, epochs: int):
        super().__init__(name, epochs)
        self.name, self.epochs = name, epochs


def _resume_run(ns, runs_dir: Path) -> tuple[Path, str, RunConfig]:
    from trainer import checkpoint
    from trainer.device import pick_device

    if ns.name is not None and ns.name != ns.resume:
        raise ConfigError(f"--resume {ns.resume} continues that run under its own name; leave out --name {ns.name!r}")
    rd = runs.run_dir(runs_dir, ns.resume)
    if not (rd / runs.CONFIG).is_file():
        raise runs.StoreError(f"no run {ns.resume!r} in {runs_dir}")
    cfg = _saved_config(rd)
    changes = _resume_changes(ns, cfg)
    if runs.effective_state(rd) == "running":
        raise runs.StoreError(f"run {ns.resume!r} is still running (pid {runs.read_status(rd).get('pid')})")
    if changes:
        cfg = cfg.replace(**changes).validate()
    pick_device(cfg.device)
    # Every check before the first write: bad input leaves the run as it was.
    done = _check_checkpoint(rd, cfg) if checkpoint.path(rd).exists() else 0
    if "epochs" in changes and changes["epochs"] < done:
        raise ConfigError(f"--epochs {changes['epochs']} is fewer than the {done} epochs run {ns.resume!r} has "
                          f"already trained (saved config: epochs {runs.read_json(rd / runs.CONFIG)['epochs']}); "
                          "nothing changed")
    if done >= cfg.epochs and runs.effective_state(rd) == "finished":
        raise AlreadyFinished(ns.resume, cfg.epochs)  # no epoch left: nothing to train, nothing to evaluate again
    if changes:
        runs.write_json(rd / runs.CONFIG, cfg.to_dict())
    if store_control.read(rd).get("stop"):
        store_control.write(rd, stop=False)  # the stop that ended the run must not end its resumption
    return rd, ns.resume, cfg


RESUME_MAY_CHANGE = ("epochs", "device")


def _resume_changes(ns, cfg: RunConfig) -> dict:
    """The flags a resume may change; a flag that differs from the saved config is refused, named."""
    if ns.preset:
        raise ConfigError("--resume keeps the run's saved config; leave out --preset")
    for f in dataclasses.fields(RunConfig):
        given = getattr(ns, f.name)
        if f.name not in RESUME_MAY_CHANGE and given is not None and given != getattr(cfg, f.name):
            flag = f.name.replace("_", "-")
            raise ConfigError(f"--resume keeps the run's saved config; only --epochs and --device may change "
                              f"(--{flag} {given!r} differs from the saved {getattr(cfg, f.name)!r})")
    return {k: getattr(ns, k) for k in RESUME_MAY_CHANGE if getattr(ns, k) is not None}


def _check_checkpoint(rd: Path, cfg: RunConfig) -> int:
    """Load the resume checkpoint into the run's model as training will; the epochs it has done.
    CheckpointError (one line) if it is damaged, hostile, or does not fit the run's model."""
    import torch

    from trainer import checkpoint, evaluate

    path = checkpoint.path(rd)
    try:
        model, ck_cfg, epoch = evaluate.load_checkpoint(rd, "last", torch.device("cpu"))
        # the optimizer's state too (momentum buffers per parameter), as the loop will load it
        torch.optim.SGD(model.parameters(), lr=cfg.lr).load_state_dict(checkpoint.load(path)["optimizer"])
    except checkpoint.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:  # RuntimeError: tensors of the wrong shape
        raise checkpoint.CheckpointError(f"checkpoint {path} does not fit run {rd.name!r}: "
                                         f"{str(e).splitlines()[0][:200]}") from None
    if (ck_cfg.model, ck_cfg.dataset) != (cfg.model, cfg.dataset):
        raise checkpoint.CheckpointError(f"checkpoint {path} is of a {ck_cfg.model} on {ck_cfg.dataset}, but run "
                                         f"{rd.name!r} trains a {cfg.model} on {cfg.dataset}")
    return epoch + 1


def _saved_config(rd: Path) -> RunConfig:
    try:
        return RunConfig.from_dict(runs.read_json(rd / runs.CONFIG)).validate()
    except ConfigError as e:
        raise ConfigError(f"{rd / runs.CONFIG} is not a valid run config: {e}") from None
    except (TypeError, UnicodeDecodeError) as e:  # a field of the wrong type or shape; bytes that are no text
        raise ConfigError(f"{rd / runs.CONFIG} is not a valid run config ({type(e).__name__})") from None


def _prepare(ns, runs_dir: Path) -> tuple[Path, str, RunConfig]:
    if ns.resume:
        return _resume_run(ns, runs_dir)
    cfg = config_from_args(ns)
    return (*_new_run(ns, cfg, runs_dir), cfg)


def _runs_dir(ns) -> Path:
    if ns.runs_dir is not None and not ns.runs_dir.strip():
        raise ConfigError(f"--runs-dir is empty; give a folder, or leave the flag out for ${runs.RUNS_DIR_ENV} or ./runs")
    return Path(ns.runs_dir) if ns.runs_dir else runs.default_runs_dir()


def _remove_unstarted(rd: Path) -> None:
    """A new run refused while setting up (held-out set larger than the data, batches that do not
    split over the ranks): remove the folder this process made, so a retry does not say "exists".
    Only if it holds nothing but the config and meta files written by _new_run."""
    made = [p for p in rd.rglob("*") if not p.is_dir()]
    if all(p.parent == rd and p.name in (runs.CONFIG, runs.META) for p in made):
        shutil.rmtree(rd, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from trainer import dist
    from trainer.checkpoint import CheckpointError
    from trainer.data import DataError

    try:
        runs_dir = _runs_dir(ns)
        rd, name, cfg = dist.from_rank0(lambda: _prepare(ns, runs_dir))  # under torchrun: once, on rank 0
    except (ConfigError, DataError, runs.StoreError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except AlreadyFinished as e:
        if dist.rank_world()[0] == 0:
            print(f"run {e.name} already finished its {e.epochs} epochs: nothing to resume. Train it longer: "
                  f"python -m trainer.run --resume {e.name} --epochs {e.epochs + 10} --runs-dir {runs_dir}; "
                  f"evaluate it again: python -m trainer.evaluate {e.name} --runs-dir {runs_dir}", file=sys.stderr)
        return 0
    except OSError as e:
        print(f"error: cannot create the run in {ns.runs_dir or runs.default_runs_dir()}: {e.strerror or e}", file=sys.stderr)
        return EXIT_IO

    from trainer import loop

    print(f"run {name}: {cfg.strategy} on {cfg.dataset} ({cfg.model}), {cfg.epochs} epochs -> {rd}", file=sys.stderr)
    try:
        state = loop.train(cfg, rd, name, resume=bool(ns.resume), progress=_progress(ns.quiet))
    except (DataError, CheckpointError, ConfigError) as e:
        if not ns.resume and dist.rank_world()[0] == 0:
            _remove_unstarted(rd)
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (WriterError, OSError) as e:
        print(f"error: {e}. The run stopped; free space or fix permissions, then: "
              f"python -m trainer.run --resume {name} --runs-dir {runs_dir}", file=sys.stderr)
        return EXIT_IO
    if state == "stopped":  # asked to stop (Ctrl-C, the dashboard's SIGTERM): exit now, no report to compute
        print(f"run {name} stopped. Continue it: python -m trainer.run --resume {name} --runs-dir {runs_dir}",
              file=sys.stderr)
        return 0
    from trainer import results  # what it measured, and where to look further (issue 13 section 4)

    print(f"run {name} {state}.\n{results.run_report(rd, runs_dir)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
