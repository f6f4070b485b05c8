"""Gradient checks of one evaluation, from the input gradients at the attack's final points: the
share of exactly-zero gradients (AutoAttack's own zero-gradient check) and the share whose FOSC is
~0 *because* ||g||_1 ~ 0 (masking, not a converged attack). One extra gradient per example."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from store import masking
from trainer import fosc


def grad_measures(model, x0: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float):
    """(zero gradient, masked) boolean per example, at x_adv (x0 for the clean column)."""
    x = x_adv.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x).float(), y, reduction="sum")  # sum: per-example gradients
        (g,) = torch.autograd.grad(loss, x)
    l1 = g.reshape(len(g), -1).abs().sum(1)
    c = fosc.fosc_linf(x.detach(), x0, g, eps)
    return l1 == 0, masking.is_masked(c, l1)
