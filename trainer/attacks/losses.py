"""Per-example attack objectives: (logits, target) -> (B,) losses, in float32 or better.

Sum-reducing these gives the per-example input gradients that FOSC needs (a batch mean would
scale them by 1/B). Half-precision logits are upcast to float32; float64 logits stay float64, so
the engine can be checked against reference implementations in double precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype == torch.float64 else t.float()


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(at_least_fp32(logits), y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """The CW-inf loss of the Curriculum and FAT code: -max(z_y - max_{j != y} z_j + kappa, 0).

    The true class is excluded from the max by a -10000 offset (as in that code), so the max is
    over the other logits whatever their sign."""
    z = at_least_fp32(logits)
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
    real = (onehot * z).sum(1)
    other = ((1.0 - onehot) * z - onehot * 10000.0).max(1).values
    return -(real - other + kappa).clamp(min=0)


def kl_to_clean(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """TRADES' inner objective: KL(p(x_0) || p(x)) per example."""
    return F.kl_div(F.log_softmax(at_least_fp32(logits), dim=1), clean_probs, reduction="none").sum(1)
