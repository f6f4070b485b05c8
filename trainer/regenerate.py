"""Regenerate the adversarial examples of chosen training examples from a run's checkpoint.

``python -m trainer.regenerate --run NAME --idx 3,17,1003 [--runs-dir DIR] [--checkpoint last]``
loads the checkpoint (weights only), the clean images through ``store.datasets`` (what the dashboard
shows), and attacks them with the run's own attack of the checkpoint's epoch (the strategy's plan:
FGSM, PGD with K steps and step size, Dynamic's stop rule at c_t, TRADES' KL), seeded, on the GPU if
there is one, else the CPU. One file per example, at the name the store gives it
(``store.insight.regen_path``): clean and adversarial image, label, predictions, FOSC, loss, steps.
The dashboard's Examples page starts this as a subprocess (argv, no shell) and reads the files.
Bad input: one line, exit 2, nothing written.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from store import datasets, insight, runs
from trainer import checkpoint
from trainer.cli import EXIT_BAD_INPUT, OneLineParser
from trainer.evaluate import load_checkpoint, pick_device
from trainer.loop import build_attack
from trainer.strategies import build_strategy

MAX_EXAMPLES = 256


class RegenerateError(ValueError):
    """Bad input; str(e) is one line for the user."""


def parse_idx(text: str) -> list[int]:
    try:
        ids = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise RegenerateError(f"--idx must be comma-separated example indices, got {text!r}") from None
    if not ids or len(ids) > MAX_EXAMPLES or ids[0] < 0:
        raise RegenerateError(f"--idx needs 1 to {MAX_EXAMPLES} indices >= 0")
    return ids


def attack_plan(state: dict, cfg, epoch: int):
    """The strategy's plan of ``epoch`` with the state the checkpoint saved (c_max, T', ...)."""
    strategy = build_strategy(cfg)
    strategy.load_state_dict(state.get("strategy", {}))
    return strategy, strategy.plan(epoch)


def regenerate(run_dir: Path, ids: list[int], which: str = "last", device: str = "auto", seed: int = 0) -> list[Path]:
    dev = pick_device(device)
    model, cfg, epoch = load_checkpoint(run_dir, which, dev)
    state = checkpoint.load(checkpoint.path(run_dir, which), map_location="cpu")
    images, labels = datasets.train_images(cfg.to_dict(), ids)
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).to(dev)
    y = torch.from_numpy(labels).to(dev)
    strategy, plan = attack_plan(state, cfg, epoch)
    torch.manual_seed(seed)  # the random start: the same images every time
    if plan.attack is None:
        x_adv, fosc, steps = x0, torch.full((len(ids),), float("nan")), torch.zeros(len(ids), dtype=torch.int32)
    else:
        attack = build_attack(plan.attack, cfg, plan.steps)
        res = attack(model, x0, y, stop_rule=strategy.stop_rule(plan, len(ids), dev), exact_final=cfg.exact_final_fosc)
        x_adv, fosc, steps = res.x_adv.detach(), res.fosc, res.steps
    with torch.no_grad():
        logits_clean, logits_adv = model(x0), model(x_adv)
        loss = torch.nn.functional.cross_entropy(logits_adv, y, reduction="none")
        p_true = logits_adv.softmax(1).gather(1, y[:, None]).squeeze(1)
    out = []
    for i, idx in enumerate(ids):
        rec = {"idx": idx, "label": labels[i], "clean": images[i],
               "adversarial": x_adv[i].permute(1, 2, 0).cpu().numpy().astype(np.float32),
               "pred_clean": logits_clean[i].argmax().item(), "pred_adv": logits_adv[i].argmax().item(),
               "fosc": float(fosc[i]), "loss": float(loss[i]), "steps": int(steps[i]), "p_true": float(p_true[i]),
               "eps": cfg.eps, "epoch": epoch, "attack": plan.attack or "none", "seed": seed}
        out.append(insight.write_regenerated(run_dir, which, rec))
    return out


def build_parser():
    p = OneLineParser(prog="python -m trainer.regenerate", description="Adversarial examples of chosen examples, again.")
    p.add_argument("--run", required=True, help="run name in --runs-dir")
    p.add_argument("--idx", required=True, help="comma-separated indices of training examples (examples.idx)")
    p.add_argument("--runs-dir", default=None, help=f"runs folder (default: ${runs.RUNS_DIR_ENV} or ./runs)")
    p.add_argument("--checkpoint", default="last", choices=("last", "best"))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from trainer.evaluate import EvalError

    try:
        ids = parse_idx(ns.idx)
        run_dir = runs.run_dir(Path(ns.runs_dir) if ns.runs_dir else runs.default_runs_dir(), ns.run)
        if not (run_dir / runs.CONFIG).is_file():
            raise RegenerateError(f"no run {ns.run!r} in {run_dir.parent}")
        paths = regenerate(run_dir, ids, ns.checkpoint, ns.device, ns.seed)
    except (RegenerateError, EvalError, checkpoint.CheckpointError, datasets.DatasetError, runs.StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"regenerated {len(paths)} examples of {ns.run} ({ns.checkpoint}) -> {paths[0].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
