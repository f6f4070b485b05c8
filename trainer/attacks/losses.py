"""Per-example attack objectives: (logits, target) -> (B,) losses, always in float32.

Sum-reducing these gives the per-example input gradients that FOSC needs (a batch mean would
scale them by 1/B).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def cw_margin(logits: torch.Tensor, y: torch.Tensor, kappa: float = 50.0) -> torch.Tensor:
    """The CW-inf loss of the Curriculum and FAT code: -max(z_y - max_{j != y} z_j + kappa, 0)."""
    z = logits.float()
    onehot = F.one_hot(y, z.shape[1]).to(z.dtype)
    real = (onehot * z).sum(1)
    other = ((1.0 - onehot) * z - onehot * 10000.0).max(1).values
    return -(real - other + kappa).clamp(min=0)


def kl_to_clean(logits: torch.Tensor, clean_probs: torch.Tensor) -> torch.Tensor:
    """TRADES' inner objective: KL(p(x_0) || p(x)) per example."""
    return F.kl_div(F.log_softmax(logits.float(), dim=1), clean_probs, reduction="none").sum(1)
