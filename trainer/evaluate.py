"""Robustness evaluation of runs: the paper's Table 1 (white-box) and Table 2 (black-box).

``python -m trainer.evaluate RUN [RUN...]`` attacks each run's checkpoints (last and best) on its test
set with Clean, FGSM, PGD-10, PGD-20 (random start, step eps/4) and CW-inf (30 steps of eps/4,
kappa 50), writes one Parquet file per (checkpoint, setting, attack) into the run's ``evals/``
(re-evaluating replaces that file, never the training logs) and prints the table.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from store.writer import to_arrow, write_parquet_atomic
from trainer import checkpoint
from trainer.attacks import FGSM, PGD, CWInf
from trainer.config import RunConfig
from trainer.data import load_dataset
from trainer.models import build_model

WHITE_BOX = ("clean", "fgsm", "pgd10", "pgd20", "cw")


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
        return None


SPECS = {"clean": AttackSpec("clean", 0), "fgsm": AttackSpec("fgsm", 1), "pgd10": AttackSpec("pgd10", 10),
         "pgd20": AttackSpec("pgd20", 20), "cw": AttackSpec("cw", 30)}


def load_model(run_dir: Path, which: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig]:
    state = checkpoint.load(checkpoint.path(run_dir, which), map_location=device)
    cfg = RunConfig.from_dict(state["config"])
    in_ch, size = (1, 28) if cfg.dataset.startswith("mnist") else (3, 32)
    model = build_model(cfg.model, in_ch, 10, size).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


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
                 checkpoints=("last", "best"), surrogate: str | Path | None = None, batch_size: int = 256,
                 progress: bool = True) -> list[dict]:
    """Evaluate the run's checkpoints; returns the rows written to its ``evals`` table."""
    run_dir = Path(run_dir)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    rows = []
    for which in checkpoints:
        if not checkpoint.path(run_dir, which).exists() and which != "last":
            continue
        model, cfg = load_model(run_dir, which, dev)
        ds, _ = load_dataset(cfg.dataset, cfg.data_root, dev, n_test=n or cfg.n_test, seed=cfg.seed)
        x, y = ds.x_test, ds.y_test
        src, setting, src_name = None, "white-box", ""
        if surrogate is not None:
            src, _ = load_model(Path(surrogate), "last", dev)
            setting, src_name = "black-box", Path(surrogate).name
        bar = _bar(progress, len(y) * len(attacks), f"{run_dir.name}:{which}")
        for name in attacks:
            spec = SPECS[name]
            acc = accuracy_under(model, x, y, spec.build(cfg.eps), batch_size, source=src, progress=bar)
            row = {"checkpoint": which, "setting": setting, "attack": name, "surrogate": src_name,
                   "eps": cfg.eps, "steps": spec.steps, "accuracy": acc, "n": len(y),
                   "created_at": np.array([datetime.now(timezone.utc).replace(tzinfo=None)], dtype="datetime64[us]")}
            write_eval(run_dir, row)
            rows.append(row)
        if bar is not None:
            bar.close()
    return rows


def write_eval(run_dir: Path, row: dict) -> None:
    tag = "-".join(s for s in (row["checkpoint"], row["setting"], row["attack"], row["surrogate"]) if s)
    write_parquet_atomic(to_arrow("evals", run_dir.name, row), run_dir / "evals" / f"{tag}.parquet", fsync=True)


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False)
