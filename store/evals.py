"""The ``evals`` table's vocabulary: attacks and their labels, eval file names, subsets, flags.

One registry that the evaluation (trainer), the tables (trainer.results) and the dashboard read, so
every table header and every ``evals.attack`` value names the attack *and* its budget. Pure Python
plus pyarrow (no torch, no DuckDB): the dashboard imports it, and store imports neither trainer nor
dashboard.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from store import files

SUBSETS_DIR = "subsets"


@dataclass(frozen=True)
class AttackInfo:
    key: str      # what the command line and the eval file names use
    value: str    # the evals.attack value: attack and budget
    header: str   # the table header: attack and budget
    kind: str     # none | white-box (gradients) | black-box (queries only) | composite
    steps: int    # iterations per target (0: none; Square: queries)


ATTACKS: dict[str, AttackInfo] = {a.key: a for a in (
    AttackInfo("clean", "clean", "Clean", "none", 0),
    AttackInfo("fgsm", "fgsm (eps)", "FGSM (eps)", "white-box", 1),
    AttackInfo("pgd10", "pgd-10 (eps/4)", "PGD-10 (eps/4)", "white-box", 10),
    AttackInfo("pgd20", "pgd-20 (eps/4)", "PGD-20 (eps/4)", "white-box", 20),
    AttackInfo("cw", "cw-inf-30 (eps/4)", "CW-inf-30 (eps/4)", "white-box", 30),
    # AutoAttack (Croce & Hein 2020) at its reference budget, and its members alone (for the cross-check).
    AttackInfo("autoattack", "autoattack-standard (100 it, square 5000)",
               "AutoAttack std. (100 it, Square 5000)", "composite", 100),
    AttackInfo("apgd-ce", "apgd-ce (100 it)", "APGD-CE (100 it)", "white-box", 100),
    AttackInfo("apgd-t", "apgd-t (9x100 it)", "APGD-T (9x100 it)", "white-box", 100),
    AttackInfo("fab-t", "fab-t (9x100 it)", "FAB-T (9x100 it)", "white-box", 100),
    AttackInfo("square", "square (5000 q)", "Square (5000 q)", "black-box", 5000),
    # The cheap variant: AutoAttack's first two members only.
    AttackInfo("apgd-ce+t", "apgd-ce+t (100 + 9x100 it)", "APGD-CE+T (100 + 9x100 it)", "composite", 100),
)}
AUTOATTACK_MEMBERS = ("apgd-ce", "apgd-t", "fab-t", "square")  # the reference order
# Values written before the registry (the key itself) or under an old key.
_LEGACY = {"apgd": "apgd-ce+t"}


def info(key_or_value: str) -> AttackInfo | None:
    """The attack of an evals.attack value or a key (older rows stored the key); None if unknown."""
    k = _LEGACY.get(key_or_value, key_or_value)
    if k in ATTACKS:
        return ATTACKS[k]
    return next((a for a in ATTACKS.values() if a.value == key_or_value), None)


def key_of(value: str) -> str:
    a = info(value)
    return a.key if a else value


def header(key_or_value: str) -> str:
    a = info(key_or_value)
    return a.header if a else key_or_value


# ---- files of one evaluation ---------------------------------------------------------------------
def eval_file(run_dir: Path, checkpoint: str, setting: str, attack_key: str, surrogate: str = "") -> Path:
    """One Parquet file per (checkpoint, setting, attack, surrogate): re-evaluating replaces it."""
    return files.eval_path(Path(run_dir), checkpoint, setting, attack_key, surrogate)


def subset_file(run_dir: Path, checkpoint: str, setting: str, attack_key: str, surrogate: str = "") -> Path:
    """The test indices that evaluation used, with whether each was still classified correctly:
    ``evals/subsets/<the eval file's name>`` (not in evals/ itself, so never read as evals rows)."""
    p = eval_file(run_dir, checkpoint, setting, attack_key, surrogate)
    return p.parent / SUBSETS_DIR / p.name


def read_subset(path: Path) -> dict[int, bool] | None:
    """{test index: correct} of one evaluation; None when missing or unreadable (untrusted input)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        t = pq.read_table(path, columns=["index", "correct"])
        return dict(zip(t["index"].to_pylist(), t["correct"].to_pylist()))
    except (OSError, KeyError, pa.ArrowException):
        return None


# ---- flags ----------------------------------------------------------------------------------------
# (c), (d): per evaluation, from the gradients at the attack's final points.
ZERO_GRAD = "zero-grad"            # >= ZERO_GRAD_SHARE of the examples have an input gradient exactly 0
FOSC_MASKED = "fosc-masked"        # >= MASKED_SHARE have FOSC ~ 0 *because* ||g||_1 ~ 0 (not convergence)
# (a), (b): across the evaluations of one checkpoint, on the test examples they share.
BLACK_BOX_WINS = "black-box-beats-white-box"
PGD_ABOVE_AA = "pgd20-above-autoattack"
ZERO_GRAD_SHARE = 0.01    # AutoAttack's own check warns at any zero gradient; 1 % keeps single outliers out
MASKED_SHARE = 0.01
from store.masking import FOSC_ZERO, GRAD_L1_ZERO  # noqa: E402  the one masking rule (store.masking)
SQUARE_MARGIN = 0.002     # AutoAttack's check_square_sr: Square lowering robust accuracy by > 0.2 points
PGD_AA_GAP = 0.05         # issue 13: PGD-20 more than 5 points above AutoAttack
FLAG_TEXT = {
    ZERO_GRAD: "a large share of zero input gradients (gradient masking?)",
    FOSC_MASKED: "FOSC ~ 0 because the gradient vanishes, not because the attack converged",
    BLACK_BOX_WINS: "a black-box/transfer attack beats the white-box ones (gradient masking?)",
    PGD_ABOVE_AA: "PGD-20 exceeds AutoAttack by more than 5 points (PGD-20 overstates robustness)",
}


def row_flags(zero_grad_share: float, masked_share: float) -> list[str]:
    out = []
    if zero_grad_share == zero_grad_share and zero_grad_share >= ZERO_GRAD_SHARE:
        out.append(ZERO_GRAD)
    if masked_share == masked_share and masked_share >= MASKED_SHARE:
        out.append(FOSC_MASKED)
    return out


def split_flags(s: str | None) -> list[str]:
    return [f for f in (s or "").split(",") if f]


def _acc_on(correct: dict[int, bool], common: set[int]) -> float:
    return sum(correct[i] for i in common) / len(common) if common else math.nan


def _pairwise(a: dict, b: dict) -> tuple[float, float]:
    """Accuracies of two evaluations on the test examples both used (row accuracies when unknown)."""
    ca, cb = a.get("_correct"), b.get("_correct")
    if ca is not None and cb is not None:
        common = set(ca) & set(cb)
        if common:
            return _acc_on(ca, common), _acc_on(cb, common)
    return a["accuracy"], b["accuracy"]


def group_flags(rows: list[dict]) -> dict[int, list[str]]:
    """(a) and (b) for the complete rows of one checkpoint: {row position: flags}. A row may carry
    ``_correct`` ({test index: correct}) so attacks evaluated on different subsets are compared on
    the examples they share."""
    out: dict[int, list[str]] = {}
    kinds = [info(r["attack"]) for r in rows]
    white = [i for i, (r, a) in enumerate(zip(rows, kinds))
             if a and a.kind in ("white-box", "composite") and r["setting"] == "white-box"]
    for i, (r, a) in enumerate(zip(rows, kinds)):
        blackbox = r["setting"] == "black-box" or (a is not None and a.kind == "black-box")
        if blackbox and a is not None and a.kind != "none":
            # "beats the white-box ones": below the strongest of them, not just below FGSM.
            if white and all(_pairwise(r, rows[j])[0] < _pairwise(r, rows[j])[1] - SQUARE_MARGIN for j in white):
                out.setdefault(i, []).append(BLACK_BOX_WINS)
        if a is not None and a.key == "autoattack" and r.get("stages"):
            st = dict(s.split("=") for s in r["stages"].split(","))
            if "square" in st and "fab-t" in st and float(st["square"]) < float(st["fab-t"]) - SQUARE_MARGIN:
                out.setdefault(i, []).append(BLACK_BOX_WINS)
    aa = [i for i, a in enumerate(kinds) if a and a.key == "autoattack" and rows[i]["setting"] == "white-box"]
    pgd = [i for i, a in enumerate(kinds) if a and a.key == "pgd20" and rows[i]["setting"] == "white-box"]
    for i in aa:
        for j in pgd:
            acc_aa, acc_pgd = _pairwise(rows[i], rows[j])
            if acc_pgd - acc_aa > PGD_AA_GAP:
                for k in (i, j):
                    out.setdefault(k, []).append(PGD_ABOVE_AA)
    return out


def complete(rows: list[dict]) -> list[dict]:
    """Rows of finished evaluations: a killed evaluation leaves its row marked partial."""
    return [r for r in rows if not r.get("partial")]


def key_sql(column: str = "attack") -> str:
    """A SQL expression mapping an evals.attack value to its registry key (older rows stored the key)."""
    whens = " ".join(f"WHEN '{a.value}' THEN '{a.key}'" for a in ATTACKS.values() if a.value != a.key)
    legacy = " ".join(f"WHEN '{old}' THEN '{new}'" for old, new in _LEGACY.items())
    return f"(CASE {column} {whens} {legacy} ELSE {column} END)"
