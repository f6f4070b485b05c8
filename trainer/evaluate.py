"""Robustness evaluation of runs: the paper's Table 1 (white-box) and Table 2 (black-box).

``python -m trainer.evaluate RUN [RUN...]`` attacks each run's checkpoints (last and best) on a seeded,
class-stratified sample of its test set (``--n``; default the whole set) with Clean, FGSM, PGD-10,
PGD-20 (random start, step eps/4) and CW-inf (30 steps of eps/4, kappa 50); on request AutoAttack at
its reference budget, its members alone, or the cheap APGD-CE+T (``trainer.evaluation.external``,
torchattacks). Each (checkpoint, setting, attack, surrogate) gets one evals row and the test indices
it used (``store.evals`` names both files). The row is written ``partial`` after every batch and
completed at the end, so a killed evaluation is never read as a result. Flags (``store.evals``):
zero gradients and FOSC masking per row; once a checkpoint's attacks are done, a black-box attack
beating the white-box ones, or PGD-20 above AutoAttack by > 5 points. ``--surrogate RUN`` crafts the
examples on another run's last checkpoint (black-box transfer, paper section 5.1). Bad input: one
line, exit 2, nothing written.
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

from store import evals as ev
from store import datasets, runs
from store.writer import to_arrow, write_parquet_atomic
from trainer import checkpoint
from trainer.attacks import FGSM, PGD, CWInf
from trainer.cli import EXIT_BAD_INPUT, OneLineParser
from trainer.config import RunConfig
from trainer.device import DeviceError, pick_device
from trainer.data import check_source, load_dataset
from trainer.evaluation import checks, external, markdown, subsets
from trainer.models import build_model

WHITE_BOX = ("clean", "fgsm", "pgd10", "pgd20", "cw")
CHECKPOINTS = ("last", "best")
ATTACK_NAMES = tuple(ev.ATTACKS)
SEED = 0  # attacks and subsets: a re-evaluation gives the same number


class EvalError(ValueError):
    """Bad input to the evaluation; str(e) is one line for the user."""


def build_attack(key: str, eps: float):
    """The attack of a registry key (None: clean): ours for FGSM/PGD/CW, torchattacks' for AutoAttack."""
    if key == "fgsm":
        return FGSM(eps)
    if key in ("pgd10", "pgd20"):
        return PGD(eps, eps / 4, ev.ATTACKS[key].steps, random_start=True)
    if key == "cw":
        return CWInf(eps, eps / 4, ev.ATTACKS[key].steps, random_start=True, kappa=50.0)
    if key in external.NAMES:
        return external.ExternalAttack(key, eps, seed=SEED)
    return None


def load_model(run_dir: Path, which: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig]:
    model, cfg, _ = load_checkpoint(run_dir, which, device)
    return model, cfg


def load_checkpoint(run_dir: Path, which: str, device: torch.device) -> tuple[torch.nn.Module, RunConfig, int]:
    """(model in eval mode, the run's config, the epoch the checkpoint ends)."""
    state = checkpoint.load(checkpoint.path(run_dir, which), map_location=device)
    cfg = RunConfig.from_dict(state["config"])
    shape = datasets.DATASETS[cfg.dataset]  # channels and size from the one registry
    model = build_model(cfg.model, shape.channels, 10, shape.size).to(device)
    model.load_state_dict(state["model"])
    return model.eval(), cfg, int(state["epoch"])


# ---- attacking a subset --------------------------------------------------------------------------
@dataclass
class Outcome:
    """One attack on one subset: per-example correctness and gradient checks; AutoAttack's stages
    (robust examples left after clean and after each member)."""
    correct: np.ndarray
    zero_grad: np.ndarray
    masked: np.ndarray
    stages: dict[str, int]

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if len(self.correct) else float("nan")


def attack_batches(model, x, y, attack, eps: float, batch_size: int, source=None, on_batch=None) -> Outcome:
    """Attack ``x`` batch by batch, crafted on ``source`` (white-box: model itself); after each batch
    ``on_batch(outcome so far, batch length)``."""
    source = source if source is not None else model
    torch.manual_seed(SEED)
    parts, stages = [], {}
    for i in range(0, len(y), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        res = None if attack is None else attack(source, xb, yb, exact_final=False)
        xa = xb if res is None else res.x_adv.detach()
        with torch.no_grad():
            ok = model(xa).argmax(1) == yb
        zero, masked = checks.grad_measures(model, xb, xa, yb, eps)
        parts.append((ok.cpu().numpy(), zero.cpu().numpy(), masked.cpu().numpy()))
        for k, v in getattr(res, "stages", {}).items():
            stages[k] = stages.get(k, 0) + v
        if on_batch is not None:
            on_batch(_outcome(parts, stages), len(yb))
    return _outcome(parts, stages)


def _outcome(parts, stages) -> Outcome:
    cat = [np.concatenate([p[j] for p in parts]) if parts else np.zeros(0, bool) for j in range(3)]
    return Outcome(cat[0], cat[1], cat[2], dict(stages))


def accuracy_under(model, x, y, attack, batch_size: int, source=None, eps: float = 0.0) -> float:
    """Accuracy of ``model`` on adversarial examples crafted against ``source`` (white-box: model)."""
    return attack_batches(model, x, y, attack, eps, batch_size, source).accuracy


def _row(which: str, setting: str, key: str, src_name: str, eps: float, out: Outcome, subset: str,
         partial: bool) -> dict:
    n = len(out.correct)
    zero, masked = (float(out.zero_grad.mean()), float(out.masked.mean())) if n else (float("nan"),) * 2
    stages = ",".join(f"{k}={v / n:.4f}" for k, v in out.stages.items()) if n else ""
    return {"checkpoint": which, "setting": setting, "attack": ev.ATTACKS[key].value, "surrogate": src_name,
            "eps": eps, "steps": ev.ATTACKS[key].steps, "accuracy": out.accuracy, "n": n, "subset": subset,
            "partial": partial, "flags": ",".join(sorted(ev.row_flags(zero, masked))), "zero_grad": zero,
            "masked": masked, "stages": stages,
            "created_at": np.array([datetime.now(timezone.utc).replace(tzinfo=None)], dtype="datetime64[us]")}


def evaluate_run(run_dir: str | Path, device: str = "auto", n: int | None = None, attacks=WHITE_BOX,
                 checkpoints=CHECKPOINTS, surrogate: str | Path | None = None, batch_size: int = 256,
                 progress: bool = True, data_root: str | None = None) -> list[dict]:
    """Evaluate the run's checkpoints on a stratified sample of ``n`` test examples (None: all);
    returns the rows written to its ``evals`` table (complete, with their flags).

    A missing 'best' checkpoint is skipped (a run killed in its first epoch has none); 'last' must exist.
    """
    run_dir = Path(run_dir)
    dev = pick_device(device)
    src, src_name = None, Path(surrogate).name if surrogate is not None else ""
    if surrogate is not None:
        src, _ = load_model(Path(surrogate), "last", dev)
    setting = "black-box" if src is not None else "white-box"
    rows, done = [], {}
    for which in checkpoints:
        if which != "last" and not checkpoint.path(run_dir, which).exists():
            continue
        model, cfg, epoch = load_checkpoint(run_dir, which, dev)
        x, y, idx, subset = test_subset(cfg.dataset, data_root or cfg.data_root, dev, n)
        bar = _bar(progress, len(y) * len(attacks), f"{run_dir.name}:{which}")
        for key in attacks:
            if (epoch, key) in done:  # 'best' is the last epoch: same weights, same seed, same result
                out = done[(epoch, key)]
            else:
                def on_batch(o, k, key=key):
                    write_eval(run_dir, _row(which, setting, key, src_name, cfg.eps, o, subset, partial=True))
                    if bar is not None:
                        bar.update(k)
                out = attack_batches(model, x, y, build_attack(key, cfg.eps), cfg.eps, batch_size, src, on_batch)
                done[(epoch, key)] = out
            # Indices first: a complete row always has its subset file next to it.
            write_subset(run_dir, which, setting, key, src_name, idx, out.correct)
            row = _row(which, setting, key, src_name, cfg.eps, out, subset, partial=False)
            write_eval(run_dir, row)
            rows.append(row)
            finalize_flags(run_dir, [])  # after every attack: a later kill leaves no row unflagged
        if bar is not None:
            bar.close()
    return finalize_flags(run_dir, rows)


@functools.lru_cache(maxsize=2)
def _test_arrays(dataset: str, data_root: str | None, dev: torch.device):
    """The whole test set, loaded once per process (n_train=1: the training images stay uint8 on disk)."""
    ds, _ = load_dataset(dataset, data_root, dev, n_train=1, n_test=None)
    return ds.x_test, ds.y_test


def test_subset(dataset: str, data_root: str | None, dev: torch.device, n: int | None, seed: int = SEED):
    """(x, y, test indices, evals.subset value) of the seeded stratified sample of ``n`` examples."""
    x, y = _test_arrays(dataset, data_root, dev)
    idx = subsets.stratified_indices(y.cpu().numpy(), n, seed)
    t = torch.as_tensor(idx, device=x.device)
    return x[t], y[t], idx, subsets.describe(n, len(y), seed)


def write_eval(run_dir: Path, row: dict) -> None:
    path = ev.eval_file(run_dir, row["checkpoint"], row["setting"], ev.key_of(row["attack"]), row["surrogate"])
    write_parquet_atomic(to_arrow("evals", run_dir.name, row), path, fsync=True)


def write_subset(run_dir: Path, which: str, setting: str, key: str, surrogate: str, idx, correct) -> None:
    import pyarrow as pa

    t = pa.table({"index": pa.array(np.asarray(idx, dtype=np.int64)),
                  "correct": pa.array(np.asarray(correct, dtype=bool))})
    path = ev.subset_file(run_dir, which, setting, key, surrogate)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(t, path, fsync=True)


def finalize_flags(run_dir: Path, new_rows: list[dict]) -> list[dict]:
    """Group flags (a), (b) over every complete row of each checkpoint, compared on the test examples
    the rows share; rewrites the rows whose flags change. Returns ``new_rows`` with their flags."""
    by_ck: dict[str, list[dict]] = {}
    for r in ev.complete(read_evals(run_dir)):
        by_ck.setdefault(r["checkpoint"], []).append(r)
    flags_of = {}
    for which, rows in by_ck.items():
        for r in rows:
            r["_correct"] = ev.read_subset(ev.subset_file(run_dir, which, r["setting"], ev.key_of(r["attack"]),
                                                          r["surrogate"] or ""))
        group = ev.group_flags(rows)
        for i, r in enumerate(rows):
            r.pop("_correct")
            flags = ",".join(sorted(set(ev.row_flags(_num(r.get("zero_grad")), _num(r.get("masked"))))
                                    | set(group.get(i, []))))
            if flags != (r.get("flags") or "") and r.get("subset") is not None:  # rows of this code only
                at = r["created_at"].replace(tzinfo=None)  # read back tz-aware (UTC); written naive UTC
                write_eval(run_dir, {**r, "flags": flags, "created_at": np.array([at], dtype="datetime64[us]")})
            flags_of[(which, r["setting"], r["attack"], r["surrogate"] or "")] = flags
    return [dict(r, flags=flags_of.get((r["checkpoint"], r["setting"], r["attack"], r["surrogate"]), r["flags"]))
            for r in new_rows]


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _bar(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ex", leave=False, file=sys.stderr)


# ---- reading evals back (pyarrow only: the GPU machine has no DuckDB) --------------------------
def read_evals(run_dir: Path) -> list[dict]:
    """Every evals row of one run, partial ones included (``store.evals.complete`` drops them)."""
    from store import checked

    rows, skipped = checked.read_rows(Path(run_dir), "evals")
    for path, why in skipped.items():
        print(f"warning: left out {path}: {why}", file=sys.stderr)
    return rows


def table_markdown(rows: list[dict], attacks=None, setting: str = "white-box", surrogate: str = "") -> str:
    """The paper's Table 1/2 layout: one line per (run, checkpoint), accuracy (%) per attack. Headers
    name attack, budget and subset; complete rows only; the flags raised in the last column."""
    rows = [r for r in ev.complete(rows) if r["setting"] == setting and (r["surrogate"] or "") == surrogate]
    cells = {(r["run"], r["checkpoint"], ev.key_of(r["attack"])): r for r in rows}
    attacks = [a for a in (attacks or ATTACK_NAMES) if any(k[2] == a for k in cells)]
    keys = sorted(dict.fromkeys(k[:2] for k in cells),
                  key=lambda k: (k[0], CHECKPOINTS.index(k[1]) if k[1] in CHECKPOINTS else 9))
    subset_of = {a: sorted({r.get("subset") or f"n={r['n']}" for k, r in cells.items() if k[2] == a}) for a in attacks}
    heads = [f"{ev.header(a)} [{'; '.join(subset_of[a])}]" for a in attacks]
    body = []
    for run, which in keys:
        got = [cells.get((run, which, a)) for a in attacks]
        flags = sorted({f for r in got if r for f in ev.split_flags(r.get("flags"))})
        body.append([run, which, *[100 * r["accuracy"] if r else None for r in got], ", ".join(flags) or "-"])
    return markdown.table(["run", "checkpoint", *heads, "flags"], body, left=2, text_last=True)


def flag_notes(rows: list[dict]) -> list[str]:
    """One line per flag raised in ``rows``: what it means."""
    raised = sorted({f for r in ev.complete(rows) for f in ev.split_flags(r.get("flags"))})
    return [f"flag {f}: {ev.FLAG_TEXT.get(f, f)}" for f in raised]


# ---- the command line --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m trainer.evaluate", description="Robustness table of runs (paper Table 1/2).")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run name (in --runs-dir) or run folder")
    p.add_argument("--runs-dir", default=None, help=f"runs folder (default: ${runs.RUNS_DIR_ENV} or ./runs)")
    p.add_argument("--n", type=int, default=None, help="a seeded class-stratified sample of N test examples (default: the whole test set)")
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
    unknown = [a for a in attacks if a not in ev.ATTACKS]
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
    if any(a in external.NAMES for a in attacks):
        try:
            external.torchattacks_module()
        except external.MissingLibrary as e:
            raise EvalError(str(e)) from None
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
    notes = flag_notes(rows)
    print("\n" + ("\n".join(notes) if notes else "flags: none raised"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
