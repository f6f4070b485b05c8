"""FOSC, the first-order stationarity criterion of Wang et al. (2019), Eq. (4), per example.

All functions are pure: (x_k, x_0, g, eps[, lo, hi]) -> a (B,) float32 tensor. ``g`` must be the
gradient of the *per-example* loss at x_k (a sum-reduced batch loss gives exactly that). Inputs
are cast to float32, whatever precision the forward pass ran in.
"""
from __future__ import annotations

import torch


def _flat(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).float()


def fosc_linf(x_k: torch.Tensor, x_0: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """max over the L-inf ball of <x - x_k, g> = eps*||g||_1 - <x_k - x_0, g>."""
    g = _flat(g)
    return eps * g.abs().sum(1) - ((_flat(x_k) - _flat(x_0)) * g).sum(1)


def fosc_l2(x_k: torch.Tensor, x_0: torch.Tensor, g: torch.Tensor, eps: float) -> torch.Tensor:
    """max over the L2 ball of <x - x_k, g> = eps*||g||_2 - <x_k - x_0, g>."""
    g = _flat(g)
    return eps * g.norm(dim=1) - ((_flat(x_k) - _flat(x_0)) * g).sum(1)


def fosc_box(x_k: torch.Tensor, g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """max over the box [lo, hi] of <x - x_k, g> = sum_i max((hi_i - x_i) g_i, (lo_i - x_i) g_i)."""
    g, x = _flat(g), _flat(x_k)
    return torch.maximum((_flat(hi) - x) * g, (_flat(lo) - x) * g).sum(1)


def grad_l1(g: torch.Tensor) -> torch.Tensor:
    """||g||_1 per example: FOSC = eps*||g||_1 - <x_k - x_0, g> reads ~0 whenever g ~ 0."""
    return _flat(g).abs().sum(1)


def box_bounds(x_0: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The feasible set PGD actually uses: the L-inf eps-ball intersected with [0, 1]."""
    return (x_0 - eps).clamp(0, 1), (x_0 + eps).clamp(0, 1)


def fosc(x_k: torch.Tensor, x_0: torch.Tensor, g: torch.Tensor, eps: float, norm: str = "linf",
         feasible_set: str = "ball") -> torch.Tensor:
    """FOSC of x_k for the chosen constraint set ('ball': the paper's; 'box': ball and [0,1])."""
    if feasible_set == "box":
        lo, hi = box_bounds(x_0, eps)
        return fosc_box(x_k, g, lo, hi)
    if norm == "linf":
        return fosc_linf(x_k, x_0, g, eps)
    if norm == "l2":
        return fosc_l2(x_k, x_0, g, eps)
    raise ValueError(f"unknown norm {norm!r}")
