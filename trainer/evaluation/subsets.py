"""Evaluation subsets: a seeded, class-stratified random sample of the test set, never "the first N"
(on MNIST the first 2,000 test digits score 5 points below the whole set on the same model)."""
from __future__ import annotations

import numpy as np


def stratified_indices(labels, n: int | None, seed: int = 0) -> np.ndarray:
    """``n`` test indices (sorted), each class within one example of its share of the test set.

    Every class is shuffled with ``seed``; an example at position r of its class's c_k examples has
    priority r / c_k, and the n lowest priorities are taken. So a class's count is floor or ceil of
    n * c_k / N, and a smaller sample with the same seed is contained in a larger one (the 1,000
    AutoAttack digits are among the 2,000 of the white-box columns, so both compare on shared examples).
    ``n`` None or >= N: the whole test set.
    """
    labels = np.asarray(labels)
    total = len(labels)
    if n is None or n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    prio = np.empty(total)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        prio[rng.permutation(idx)] = (np.arange(len(idx)) + 0.5) / len(idx)
    order = np.lexsort((labels, prio))  # ties (equal shares) broken by class, deterministically
    return np.sort(order[:n])


def describe(n: int | None, total: int, seed: int) -> str:
    """The evals.subset value: which test examples an evaluation used."""
    return "all" if n is None or n >= total else f"stratified seed {seed}: {n} of {total}"
