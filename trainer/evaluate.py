"""Robustness evaluation of runs: the paper's Table 1 (white-box) and Table 2 (black-box).

``python -m trainer.evaluate RUN [RUN...]`` attacks each run's checkpoints (last and best) on its test
set with Clean, FGSM, PGD-10, PGD-20 (random start, step eps/4) and CW-inf (30 steps of eps/4,
kappa 50), writes one Parquet file per (checkpoint, setting, attack, surrogate) into the run's
``evals/`` (re-evaluating replaces that file, never the training logs) and prints the table.
Two independent columns come from torchattacks (imported only when asked): ``autoattack`` (its
AutoAttack 'standard': APGD-CE, APGD-T, FAB-T, Square) and ``apgd`` (APGD-CE + APGD-T, 100 steps each,
the cheaper pair). ``--surrogate RUN`` crafts the examples on another run's last checkpoint
(black-box transfer, paper §5.1). Bad input: one line, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from store import runs
from store.writer import to_arrow, write_parquet_atomic
from trainer import checkpoint
from trainer.cli import EXIT_BAD_INPUT, OneLineParser
from trainer.attacks import FGSM, PGD, CWInf
from trainer.config import RunConfig
from trainer.device import DeviceError, pick_device
from trainer.data import check_source, load_dataset
from trainer.models import build_model

WHITE_BOX = ("clean", "fgsm", "pgd10", "pgd20", "cw")
CHECKPOINTS = ("last", "best")
LABELS = {"clean": "Clean", "fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20", "cw": "CW-inf",
          "autoattack": "AutoAttack", "apgd": "APGD-CE+T"}


class EvalError(ValueError):
    """Bad input to the evaluation; str(e) is one line for the user."""


class TorchattacksAttack:
    """A torchattacks attack behind our attack call signature (x_adv crafted against ``model``)."""

    def __init__(self, name: str, eps: float):
        self.name, self.eps = name, eps

    def build(self, model):
        try:
            import torchattacks
        except ImportError:
            raise EvalError(f"attack {self.name} needs torchattacks (pip install --no-deps torchattacks==3.5.1)") from None
        if self.name == "autoattack":
            return torchattacks.AutoAttack(model, norm="Linf", eps=self.eps, version="standard", n_classes=10, seed=0)
        # AutoAttack's first two members at the reference budget (100 iterations each; torchattacks'
        # own AutoAttack uses its default of 10). MultiAttack runs APGD-T only on what APGD-CE missed.
        ce = torchattacks.APGD(model, norm="Linf", eps=self.eps, steps=100, n_restarts=1, loss="ce", seed=0)
        t = torchattacks.APGDT(model, norm="Linf", eps=self.eps, steps=100, n_restarts=1, n_classes=10, seed=0)
        return torchattacks.MultiAttack([ce, t])

    def __call__(self, model, x, y, exact_final: bool = False):
        return _Adv(self.build(model)(x, y).detach())


@dataclass
class _Adv:
    x_adv: torch.Tensor


@dataclass
class AttackSpec:
    name: str
    steps: int

    def build(self, eps: float):
        if self.name == "fgsm":
            return FGSM(eps)
        if self.name.startswith("pgd"):
            return PGD(eps, eps / 4, self.steps, random_start=True)
        if self.name == "cw":
            return CWInf(eps, eps / 4, self.steps, random_start=True, kappa=50.0)
        if self.name in ("autoattack", "apgd"):
            return TorchattacksAttack(self.name, eps)
        return None


SPECS = {"clean": AttackSpec("clean", 0), "fgsm": AttackSpec("fgsm", 1), "pgd10": AttackSpec("pgd10", 10),
         "pgd20": AttackSpec("pgd20", 20), "cw": AttackSpec("cw", 30), "autoattack": AttackSpec("autoattack", 0),
         "apgd": AttackSpec("apgd", 100)}
ATTACK_NAMES = tuple(SPECS)


def load_model(run_dir: Path, which: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig]:
    model, cfg, _ = load_checkpoint(run_dir, which, device)
    return model, cfg


def load_checkpoint(run_dir: Path, which: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig, int]:
    """(model in eval mode, the run's config, the epoch the checkpoint ends)."""
    state = checkpoint.load(checkpoint.path(run_dir, which), map_location=device)
    cfg = RunConfig.from_dict(state["config"])
    in_ch, size = (1, 28) if cfg.dataset.startswith("mnist") else (3, 32)
    model = build_model(cfg.model, in_ch, 10, size).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, int(state["epoch"])


@torch.no_grad()
def _predict(model, x):
    return model(x).argmax(1)


def accuracy_under(model, x, y, attack, batch_size: int, source=None, seed: int = 0, progress=None) -> float:
    """Accuracy of ``model`` on adversarial examples crafted against ``source`` (white-box: model)."""
    source = source if source is not None else model
    torch.manual_seed(seed)
    correct = 0
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = xb if attack is None else attack(source, xb, yb, exact_final=False).x_adv
        correct += (_predict(model, xa) == yb).sum().item()
        if progress is not None:
            progress.update(len(yb))
    return correct / len(y)


def evaluate_run(run_dir: str | Path, device: str = "auto", n: int | None = None, attacks=WHITE_BOX,
                 checkpoints=CHECKPOINTS, surrogate: str | Path | None = None, batch_size: int = 256,
                 progress: bool = True, data_root: str | None = None) -> list[dict]:
    """Evaluate the run's checkpoints; returns the rows written to its ``evals`` table.

    A missing 'best' checkpoint is skipped (a run killed in its first epoch has none); 'last' must exist.
    """
    run_dir = Path(run_dir)
    dev = pick_device(device)
    src = src_name = None
    if surrogate is not None:
        src, _ = load_model(Path(surrogate), "last", dev)
        src_name = Path(surrogate).name
    rows, done = [], {}
    for which in checkpoints:
        if which != "last" and not checkpoint.path(run_dir, which).exists():
            continue
        model, cfg, epoch = load_checkpoint(run_dir, which, dev)
        ds = test_set(cfg.dataset, data_root or cfg.data_root, dev, n or cfg.n_test)
        bar = _bar(progress, len(ds.y_test) * len(attacks), f"{run_dir.name}:{which}")
        for name in attacks:
            spec = SPECS[name]
            if (epoch, name) in done:  # 'best' is the last epoch: same weights, same seed, same result
                acc = done[(epoch, name)]
            else:
                acc = accuracy_under(model, ds.x_test, ds.y_test, spec.build(cfg.eps), batch_size, source=src,
                                     progress=bar)
                done[(epoch, name)] = acc
            row = {"checkpoint": which, "setting": "black-box" if src is not None else "white-box", "attack": name,
                   "surrogate": src_name or "", "eps": cfg.eps, "steps": spec.steps, "accuracy": acc,
                   "n": len(ds.y_test),
                   "created_at": np.array([datetime.now(timezone.utc).replace(tzinfo=None)], dtype="datetime64[us]")}
            write_eval(run_dir, row)
            rows.append(row)
        if bar is not None:
            bar.close()
    return rows


@functools.lru_cache(maxsize=2)
def test_set(dataset: str, data_root: str | None, dev: torch.device, n: int | None):
    """The first ``n`` test examples, loaded once per process (n_train=1: the training images stay uint8 on disk)."""
    ds, _ = load_dataset(dataset, data_root, dev, n_train=1, n_test=n)
    return ds


def eval_file(run_dir: Path, which: str, setting: str, attack: str, surrogate: str = "") -> Path:
    tag = "-".join(s for s in (which, setting, attack, surrogate) if s)
    return run_dir / "evals" / f"{tag}.parquet"


def write_eval(run_dir: Path, row: dict) -> None:
    path = eval_file(run_dir, row["checkpoint"], row["setting"], row["attack"], row["surrogate"])
    write_parquet_atomic(to_arrow("evals", run_dir.name, row), path, fsync=True)


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False, file=sys.stderr)


# ---- reading evals back (pyarrow only: the GPU machine has no DuckDB) --------------------------
def read_evals(run_dir: Path) -> list[dict]:
    """Every evals row of one run (one file per (checkpoint, setting, attack, surrogate))."""
    import pyarrow.parquet as pq

    out = []
    for f in sorted((run_dir / "evals").glob("*.parquet")):
        out += pq.read_table(f).to_pylist()
    return out


def table_markdown(rows: list[dict], attacks=None, setting: str = "white-box", surrogate: str = "") -> str:
    """The paper's Table 1/2 layout: one line per (run, checkpoint), accuracy (%) per attack."""
    rows = [r for r in rows if r["setting"] == setting and (r["surrogate"] or "") == surrogate]
    attacks = [a for a in (attacks or ATTACK_NAMES) if any(r["attack"] == a for r in rows)]
    cells = {(r["run"], r["checkpoint"], r["attack"]): r for r in rows}
    keys = list(dict.fromkeys((r["run"], r["checkpoint"]) for r in rows))
    keys.sort(key=lambda k: (k[0], CHECKPOINTS.index(k[1]) if k[1] in CHECKPOINTS else 9))
    n_of = {a: sorted({r["n"] for r in rows if r["attack"] == a}) for a in attacks}
    base_n = n_of[attacks[0]] if attacks else []
    heads = [LABELS.get(a, a) + ("" if n_of[a] == base_n else f" (n={'/'.join(map(str, n_of[a]))})") for a in attacks]
    lines = ["| run | checkpoint | " + " | ".join(heads) + " |", "|---|---|" + "---:|" * len(attacks)]
    for run, which in keys:
        vals = [f"{100 * cells[(run, which, a)]['accuracy']:.2f}" if (run, which, a) in cells else "-" for a in attacks]
        lines.append(f"| {run} | {which} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


# ---- the command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainer.evaluate", description="Robustness table of runs (paper Table 1/2).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run name (in --runs-dir) or run folder")
    p.add_argument("--runs-dir", default=None, help=f"runs folder (default: ${runs.RUNS_DIR_ENV} or ./runs)")
    p.add_argument("--n", type=int, default=None, help="first N test examples (default: the whole test set)")
    p.add_argument("--attacks", default=",".join(WHITE_BOX), help=f"comma-separated subset of {','.join(ATTACK_NAMES)}")
    p.add_argument("--checkpoint", default="both", choices=("last", "best", "both"))
    p.add_argument("--surrogate", metavar="RUN", help="black-box: craft examples on this run's last checkpoint")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--data-root", default=None, help="override the data root saved in the runs' configs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def resolve_run(arg: str, runs_dir: Path) -> Path:
    """A run given by name (in runs_dir) or by folder path; EvalError if it is not a run."""
    cands = [Path(arg)] if ("/" in arg or arg in (".", "..")) else [runs_dir / arg, Path(arg)]
    for c in cands:
        if (c / runs.CONFIG).is_file():
            return c
    raise EvalError(f"no run {arg!r} in {runs_dir}")


def check_inputs(ns) -> tuple[list[Path], tuple[str, ...], tuple[str, ...], Path | None]:
    """Validate everything before anything is written: runs, checkpoints (loadable), attacks."""
    attacks = tuple(a.strip() for a in ns.attacks.split(",") if a.strip())
    unknown = [a for a in attacks if a not in SPECS]
    if unknown or not attacks:
        raise EvalError(f"unknown attack {unknown[0] if unknown else ns.attacks!r}; choose from: {', '.join(ATTACK_NAMES)}")
    if (ns.n is not None and ns.n < 1) or ns.batch_size < 1:
        raise EvalError("--n and --batch-size must be >= 1")
    runs_dir = Path(ns.runs_dir) if ns.runs_dir else runs.default_runs_dir()
    which = CHECKPOINTS if ns.checkpoint == "both" else (ns.checkpoint,)
    run_dirs = [resolve_run(r, runs_dir) for r in ns.runs]
    datasets = set()
    for rd in run_dirs:
        for w in which:
            if w == "best" and ns.checkpoint == "both" and not checkpoint.path(rd, w).exists():
                continue
            cfg = _check_checkpoint(rd, w)
        check_source(cfg.dataset, ns.data_root or cfg.data_root)
        datasets.add(cfg.dataset)
    surrogate = None
    if ns.surrogate:
        surrogate = resolve_run(ns.surrogate, runs_dir)
        if {_check_checkpoint(surrogate, "last").dataset} != datasets:
            raise EvalError(f"surrogate {surrogate.name} was trained on another dataset than the runs it attacks")
    if any(a in ("autoattack", "apgd") for a in attacks):
        try:
            import torchattacks  # noqa: F401
        except ImportError:
            raise EvalError("attacks autoattack/apgd need torchattacks (pip install --no-deps torchattacks==3.5.1)") from None
    return run_dirs, attacks, which, surrogate


def _check_checkpoint(rd: Path, which: str) -> RunConfig:
    """Load it as the evaluation will (CheckpointError: missing, corrupt or foreign file)."""
    try:
        return load_checkpoint(rd, which, torch.device("cpu"))[1]
    except checkpoint.CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        # RuntimeError: weights that do not fit this code's model (e.g. saved by an older architecture).
        reason = str(e).splitlines()[0][:300]
        raise EvalError(f"checkpoint {checkpoint.path(rd, which)} does not load into its model: {reason}") from None


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from trainer.checkpoint import CheckpointError
    from trainer.data import DataError

    try:
        run_dirs, attacks, which, surrogate = check_inputs(ns)
        pick_device(ns.device)
        rows = []
        for rd in run_dirs:
            rows += [dict(r, run=rd.name) for r in evaluate_run(
                rd, device=ns.device, n=ns.n, attacks=attacks, checkpoints=which, surrogate=surrogate,
                batch_size=ns.batch_size, progress=not ns.quiet, data_root=ns.data_root)]
    except (EvalError, CheckpointError, DataError, runs.StoreError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    setting = "black-box" if surrogate else "white-box"
    title = f"{setting} accuracy (%)" + (f", examples crafted on {surrogate.name}" if surrogate else "")
    print(f"{title}\n\n{table_markdown(rows, attacks, setting, surrogate.name if surrogate else '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
