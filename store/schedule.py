"""The Dynamic FOSC schedule c_t, part of a run's record.

The trainer follows it and the dashboard draws it (past and projected epochs) from the c_max and
T' logged in the ``epochs`` table, so the formula lives here, beside the schema, for both.
"""
from __future__ import annotations


def c_t(epoch: float, c_max: float, t_prime: float) -> float:
    """Algorithm 1: c_t = max(c_max - t * c_max / T', 0)."""
    return max(c_max - epoch * c_max / t_prime, 0.0)
