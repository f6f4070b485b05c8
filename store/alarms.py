"""Alarms: what is going wrong with a run, said with its evidence.

Pure functions over a run's tables (``epochs`` rows as dicts, its config, its latest evaluation rows,
one epoch's per-example figures), so the trainer (which writes them as ``alarm`` events at each
epoch's end), the dashboard (Runs table, Run page) and a notebook share one rule. ``check(run_dir)``
loads what they need with pyarrow only (the GPU machine has no DuckDB).

- robust overfitting (Rice et al. 2020): held-out PGD accuracy more than ``ROBUST_MARGIN`` below its
  best epoch; ``checkpoints/best.pt`` holds that epoch;
- catastrophic overfitting (Wong et al. 2020): in epochs trained with FGSM, held-out PGD accuracy
  collapses (to at most ``COLLAPSE_SHARE`` of its best, and by at least ``COLLAPSE_DROP``) while the
  accuracy on the FGSM examples trained on rises;
- gradient masking: FOSC ~ 0 *because* the gradient vanishes (``store.masking``) for at least
  ``MASKED_SHARE`` of the latest epoch's examples, or flags on the latest evaluation (store.evals);
- stalled convergence: over the last ``STALL_WINDOW`` + 1 epochs, each with Dynamic's threshold
  binding (FOSC median above c_t), c_t fell by ``STALL_CT_FALL`` while the FOSC median did not fall
  (by ``STALL_FOSC_FALL``): the attack no longer reaches the threshold; or at least
  ``FLOOR_SHARE`` of the latest epoch's examples sit at the clipping floor (``fosc - fosc_box``, the
  part of FOSC that no step inside [0, 1] can remove, is most of their FOSC and keeps it above c_t).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from store import files, masking, runs

ROBUST_MARGIN = 0.05
# A collapse is relative: a tiny FGSM run (mnist-demo, eps 0.3) went 0.129 -> 0.004 held-out PGD accuracy
# while its FGSM accuracy doubled, Wong et al.'s signature, which a fixed 0.2 drop missed. The small
# absolute floor keeps noise near 0 accuracy (0.04 -> 0.01) from counting.
COLLAPSE_SHARE = 0.25
COLLAPSE_DROP = 0.05
STALL_WINDOW = 2
STALL_CT_FALL = 0.2
STALL_FOSC_FALL = 0.05
FLOOR_FRACTION = 0.9     # at the floor: fosc - fosc_box >= 90% of its FOSC
FLOOR_SHARE = 0.5
MASKED_SHARE = 0.01
FGSM_STRATEGIES = ("fast",)  # trained with FGSM in every epoch; fgsm-pgd in its first fgsm_epochs
EVENT = "alarm"              # events.kind of an alarm; detail: '<kind>: <evidence>'
KINDS = ("robust_overfitting", "catastrophic_overfitting", "gradient_masking", "stalled_convergence")
TITLES = dict(zip(KINDS, ("Robust overfitting", "Catastrophic overfitting", "Gradient masking",
                          "Stalled convergence")))


@dataclass(frozen=True)
class Alarm:
    kind: str
    epoch: int           # the epoch the evidence is from
    evidence: str        # one line with the numbers
    checkpoint: str = ""  # the checkpoint to use instead, if any

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def as_dict(self) -> dict:
        return {**asdict(self), "title": self.title}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def robust_overfitting(epochs: list[dict], margin: float = ROBUST_MARGIN) -> Alarm | None:
    acc = [(int(r["epoch"]), r["heldout_pgd_acc"]) for r in epochs if _finite(r.get("heldout_pgd_acc"))]
    if len(acc) < 2:
        return None
    best_epoch, best = max(acc, key=lambda t: (t[1], -t[0]))  # the earliest best: what best.pt holds
    last_epoch, last = acc[-1]
    if best - last <= margin:
        return None
    return Alarm("robust_overfitting", last_epoch,
                 f"held-out PGD accuracy {last:.3f} at epoch {last_epoch} is {best - last:.3f} below its best, "
                 f"{best:.3f} at epoch {best_epoch}: checkpoints/best.pt holds epoch {best_epoch}", "best")


def fgsm_trained(epoch: int, config: dict) -> bool:
    strategy = config.get("strategy")
    return strategy in FGSM_STRATEGIES or (strategy == "fgsm-pgd" and epoch < int(config.get("fgsm_epochs") or 0))


def catastrophic_overfitting(epochs: list[dict], config: dict, drop: float = COLLAPSE_DROP,
                             share: float = COLLAPSE_SHARE) -> Alarm | None:
    rows = [r for r in epochs if fgsm_trained(int(r["epoch"]), config)
            and _finite(r.get("heldout_pgd_acc")) and _finite(r.get("train_adv_acc"))]
    for i, r in enumerate(rows):
        best = max(rows[:i + 1], key=lambda b: (b["heldout_pgd_acc"], -b["epoch"]))
        fell = best["heldout_pgd_acc"] - r["heldout_pgd_acc"]
        if (fell >= drop and r["heldout_pgd_acc"] <= share * best["heldout_pgd_acc"]
                and r["train_adv_acc"] > best["train_adv_acc"]):
            return Alarm("catastrophic_overfitting", int(r["epoch"]),
                         f"trained with FGSM, held-out PGD accuracy fell from {best['heldout_pgd_acc']:.3f} "
                         f"(epoch {best['epoch']}) to {r['heldout_pgd_acc']:.3f} (epoch {r['epoch']}) while the "
                         f"accuracy on the FGSM examples rose from {best['train_adv_acc']:.3f} to {r['train_adv_acc']:.3f}",
                         "best")
    return None


def gradient_masking(stats: dict, evals: list[dict] | None = None) -> Alarm | None:
    """``stats``: ``epoch_stats`` of the latest epoch; ``evals``: the evaluation rows (flags column)."""
    why = []
    share = stats.get("masked_share", math.nan)
    if _finite(share) and share >= MASKED_SHARE:
        why.append(f"{share:.1%} of epoch {stats['epoch']}'s examples have FOSC ~ 0 because their input gradient "
                   f"vanishes (||g||_1 <= {masking.GRAD_L1_ZERO:g})")
    flagged = sorted({(r.get("checkpoint"), r.get("attack"), f) for r in (evals or [])
                      for f in (r.get("flags") or "").split(",") if f})
    if flagged:
        why.append("evaluation flags: " + "; ".join(f"{c} {a}: {f}" for c, a, f in flagged[:4]))
    if not why:
        return None
    return Alarm("gradient_masking", int(stats.get("epoch", -1)), "; ".join(why))


def stalled_convergence(epochs: list[dict], stats: dict | None = None, window: int = STALL_WINDOW) -> Alarm | None:
    # Only epochs where the threshold binds count: while c_t is above the median FOSC, the median
    # example stops at once and its FOSC has no reason to fall. A stall: the last window + 1 epochs
    # in a row all missed c_t, c_t kept falling, and the FOSC median did not.
    rows = []
    for r in epochs:
        binding = _finite(r.get("c_t")) and _finite(r.get("fosc_q50")) and r["fosc_q50"] > r["c_t"]
        rows = rows + [r] if binding else []
    rows = rows[-(window + 1):]
    if len(rows) == window + 1:
        a, b = rows[0], rows[-1]
        ct_fell = a["c_t"] > 0 and a["c_t"] - b["c_t"] >= STALL_CT_FALL * a["c_t"]
        fosc_flat = b["fosc_q50"] > (1 - STALL_FOSC_FALL) * a["fosc_q50"]
        if ct_fell and fosc_flat and b["fosc_q50"] > b["c_t"]:
            return Alarm("stalled_convergence", int(b["epoch"]),
                         f"c_t fell from {a['c_t']:.4g} (epoch {a['epoch']}) to {b['c_t']:.4g} (epoch {b['epoch']}) "
                         f"but the FOSC median went from {a['fosc_q50']:.4g} to {b['fosc_q50']:.4g}: the attack no "
                         "longer reaches the threshold")
    share = (stats or {}).get("floor_share", math.nan)
    if _finite(share) and share >= FLOOR_SHARE:
        return Alarm("stalled_convergence", int(stats["epoch"]),
                     f"{share:.1%} of epoch {stats['epoch']}'s examples sit at the clipping floor: most of their "
                     "FOSC (fosc - fosc_box) comes from the [0, 1] box, which no step can remove")
    return None


def evaluate(config: dict, epochs: list[dict], stats: dict, evals: list[dict] | None = None) -> list[Alarm]:
    """Every alarm that the figures raise, in KINDS order."""
    found = [robust_overfitting(epochs), catastrophic_overfitting(epochs, config), gradient_masking(stats, evals),
             stalled_convergence(epochs, stats)]
    return [a for a in found if a is not None]


# ---- loading a run's figures (pyarrow only) ----------------------------------------------------------

def epochs_rows(run_dir: Path) -> list[dict]:
    from store import checked  # the views' rule: files linked out, foreign or damaged are left out

    out, _ = checked.read_rows(run_dir, "epochs", [p for _, p in files.summary_files(run_dir)])
    return sorted(out, key=lambda r: r["epoch"])


def _columns(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """float64 columns of one examples file (NaN for columns it lacks); None if it does not parse."""
    try:
        have = set(pq.read_schema(path).names)
        t = pq.read_table(path, columns=[c for c in names if c in have])
    except (OSError, pa.ArrowException):
        return None
    if names[0] not in have:  # not an examples file
        return None
    return {c: (t[c].to_numpy(zero_copy_only=False).astype(np.float64) if c in have else np.full(t.num_rows, np.nan))
            for c in names}


def epoch_stats(run_dir: Path, epoch: int) -> dict:
    """Shares of one epoch's examples that are masked and that sit at the clipping floor (NaN when the
    run does not log grad_l1 / fosc_box)."""
    names = ("fosc", "grad_l1", "fosc_box", "c_t")
    parts = [c for p in files.epoch_files(runs.epoch_dir(run_dir, "examples", epoch)) if (c := _columns(p, names))]
    out = {"epoch": epoch, "n": 0, "masked_share": math.nan, "floor_share": math.nan}
    if not parts:
        return out
    a = {c: np.concatenate([p[c] for p in parts]) for c in names}
    out["n"] = len(a["fosc"])
    if np.isfinite(a["grad_l1"]).any():
        out["masked_share"] = float(np.mean(masking.is_masked(a["fosc"], a["grad_l1"])))
    if np.isfinite(a["fosc_box"]).any():
        floor = a["fosc"] - a["fosc_box"]
        above = np.where(np.isfinite(a["c_t"]), a["fosc"] > a["c_t"], a["fosc"] > masking.FOSC_ZERO)
        out["floor_share"] = float(np.mean(above & (floor >= FLOOR_FRACTION * a["fosc"])))
    return out


def check(run_dir: str | Path) -> list[Alarm]:
    """The alarms of one run folder now (its latest epoch, its latest evaluation)."""
    run_dir = Path(run_dir)
    try:
        config = runs.read_json(run_dir / runs.CONFIG, {}) or {}
    except runs.StoreError:
        config = {}
    config = config if isinstance(config, dict) else {}
    ep = epochs_rows(run_dir)
    stats = epoch_stats(run_dir, int(ep[-1]["epoch"])) if ep else {"epoch": -1}
    from store import checked

    evals, _ = checked.read_rows(run_dir, "evals", columns=["checkpoint", "attack", "flags"])
    return evaluate(config, ep, stats, evals)


def record(run_dir: str | Path, run: str, epoch: int) -> list[Alarm]:
    """At an epoch's end: write each alarm that is raised and not yet in the run's events as an event
    (kind ``alarm``, detail ``'<kind>: <evidence>'``). Returns the new ones."""
    from store.writer import write_event

    run_dir = Path(run_dir)
    from store import checked

    events, _ = checked.read_rows(run_dir, "events", columns=["kind", "detail"])
    seen = {str(r.get("detail", "")).split(":", 1)[0] for r in events if r.get("kind") == EVENT}
    new = [a for a in check(run_dir) if a.kind not in seen]
    for a in new:
        write_event(run_dir, run, EVENT, f"{a.kind}: {a.evidence}", epoch)
    return new
