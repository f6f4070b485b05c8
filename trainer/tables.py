"""The reproducible tables: their training flags, how each is evaluated, run names, and the paper's
numbers. ``trainer.reproduce`` (runs them) and ``trainer.results`` (writes them) both read this;
neither imports the other's module for it."""
from __future__ import annotations

from dataclasses import dataclass

from store.strategies import NAMES

ALL_STRATEGIES = ("unsecured", "standard", "curriculum", "dynamic")  # the paper's: a table's default
# Costly first (so --parallel finishes sooner), then any other registered strategy; rows in registry order.
TRAIN_ORDER = ("standard", "dynamic", "curriculum", *(n for n in NAMES if n not in ALL_STRATEGIES), "unsecured")
ORDER = NAMES
WHITE = ("clean", "fgsm", "pgd10", "pgd20", "cw")


@dataclass(frozen=True)
class TableSpec:
    """One reproducible table: the training flags shared by its strategies and how it is evaluated."""
    preset: str
    train_flags: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ALL_STRATEGIES
    eval_n: int | None = None                 # stratified test sample for the white-box columns (None: all)
    attacks: tuple[str, ...] = WHITE
    aa_attack: str | None = None              # the independent column (a store.evals key): 'autoattack'
    aa_n: int | None = None                   # its stratified sample (it is the costly one), last checkpoint
    fig_epochs: tuple[int, ...] = ()          # epochs shown in the FOSC density figure
    note: str = ""


TABLES: dict[str, TableSpec] = {
    # section 5.1: CNN4, eps 0.3, 50 epochs, lr /10 at 20 and 40, Dynamic c_max 0.5, T' 40.
    "mnist": TableSpec("paper-mnist", aa_attack="autoattack", aa_n=1000, fig_epochs=(0, 10, 20, 40, 49),
                       note="paper section 5.1: CNN4, eps 0.3, 50 epochs, lr 0.01 /10 at 20 and 40, c_max 0.5, T' 40"),
    # section 5.1: CNN8, eps 8/255, 120 epochs, lr /10 at 60 and 100, T' 100. Standard and Dynamic first.
    "cifar10": TableSpec("paper-cifar10", strategies=("standard", "dynamic", "curriculum", "unsecured"),
                         aa_attack="autoattack", aa_n=1000, fig_epochs=(0, 30, 60, 100, 119),
                         note="paper section 5.1: CNN8, eps 8/255, 120 epochs, lr 0.01 /10 at 60 and 100, "
                              "c_max 0.5, T' 100"),
    # The CPU table: 10k real training digits, 10 epochs, milestones and T' scaled 50 -> 10.
    # Ten epochs are too short for Curriculum's plateau rule (it stayed at k = 0 for 8 epochs): the
    # fixed schedule, named as such (curriculum-fixed: k = 0..10 spread over T' = 8 epochs).
    "mnist-cpu": TableSpec("paper-mnist", ("--n-train", "10000", "--epochs", "10", "--milestones", "4,8",
                                           "--t-prime", "8", "--curriculum-patience", "1"),
                           strategies=("unsecured", "standard", "curriculum-fixed", "dynamic"),
                           eval_n=2000, aa_attack="autoattack", aa_n=1000, fig_epochs=(0, 2, 5, 9),
                           note="10,000 training digits of real MNIST, 10 epochs, lr /10 at 4 and 8, "
                                "c_max 0.5, T' 8, Curriculum with the fixed schedule (curriculum-fixed: "
                                "k = 0..10 over T' epochs), schedules scaled from 50 to 10 epochs"),
    # CI's miniature of mnist-cpu (not in --help): two strategies, a few hundred digits, 2 epochs.
    "mnist-tiny": TableSpec("paper-mnist", ("--n-train", "512", "--epochs", "2", "--milestones", "2",
                                            "--t-prime", "2", "--heldout", "128", "--batch-size", "64",
                                            "--trajectory-examples", "8"),
                            strategies=("unsecured", "standard"), eval_n=200, attacks=("clean", "pgd20"),
                            fig_epochs=(0, 1), note="CI miniature of mnist-cpu"),
}
PUBLIC_TABLES = ("mnist", "cifar10", "mnist-cpu")

# The paper's Table 1 (white-box accuracy %, Clean / FGSM / PGD-10 / PGD-20 / CW-inf).
PAPER = {
    "mnist": {"unsecured": (99.20, 14.04, 0.0, 0.0, 0.0), "standard": (97.61, 94.71, 91.21, 90.62, 91.03),
              "curriculum": (98.62, 95.51, 91.24, 90.65, 91.12), "dynamic": (97.96, 95.34, 91.63, 91.27, 91.47)},
    "cifar10": {"standard": (66.31, 48.65, 44.39, 40.02, 36.33), "curriculum": (72.40, 50.47, 45.54, 40.12, 35.77),
                "dynamic": (72.17, 52.81, 48.06, 42.40, 37.26)},
}
PAPER_OF = {"mnist": "mnist", "mnist-cpu": "mnist", "mnist-tiny": "mnist", "cifar10": "cifar10"}


def run_name(table: str, strategy: str) -> str:
    return f"{table}-{strategy}"
