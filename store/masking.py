"""The gradient-masking rule, in one place, for Python and for SQL.

FOSC = eps*||g||_1 - <x_k - x_0, g> (paper Eq. 4) reads ~0 whenever the input gradient g vanishes
(a saturated softmax, a shattered gradient): that is masking, not a converged attack. A row of
``examples`` or ``steps`` (both log ``fosc`` and ``grad_l1`` from the same gradient), or an
evaluation's final points, is *masked* when its FOSC is ~0 *and* its ||g||_1 is ~0. A FOSC ~0 with
a normal gradient is convergence on the boundary of the ball (x_k - x_0 = eps*sign(g)).

The store imports neither trainer nor dashboard, so the trainer, the evaluation and the dashboard's
SQL all read the rule from here.
"""
from __future__ import annotations

FOSC_ZERO = 1e-3     # FOSC this small reads as "converged" under any c_t used in training
GRAD_L1_ZERO = 1e-6  # ||g||_1 of a normal model's CE input gradient is ~1e-3..10 (MNIST/CIFAR, float32)


def is_masked(fosc, grad_l1):
    """Elementwise rule on arrays or tensors (numpy, torch, pandas) or floats: FOSC ~0 because g ~0.
    NaN in either (a retired step row, an L2 box FOSC) is never masked."""
    return (fosc <= FOSC_ZERO) & (grad_l1 <= GRAD_L1_ZERO)


def masked_sql(fosc: str = "fosc", grad_l1: str = "grad_l1") -> str:
    """The same rule as a DuckDB boolean expression over two column names (NULL for older runs,
    which have no ``grad_l1``), e.g. ``SELECT avg(CAST(<expr> AS DOUBLE)) FROM examples``."""
    for name in (fosc, grad_l1):
        if not name.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"not a column name: {name!r}")
    return f"({fosc} <= {FOSC_ZERO!r} AND {grad_l1} <= {GRAD_L1_ZERO!r})"
