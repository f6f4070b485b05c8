"""The attack's view of a model: every eval-mode BatchNorm folded into the conv or linear before it.

While attacking, BatchNorm runs in eval mode (``bn_mode='eval'``): a fixed per-channel affine map,
which folds exactly (up to float rounding) into the preceding layer's weights: W' = W*s,
b' = (b - mean)*s + beta with s = gamma / sqrt(var + eps). The folded view skips BatchNorm's forward
and backward at every PGD step (CNN4 on CPU: ~1.4x per input gradient, docs/BENCHMARKS.md). It
shares every other module with the model, and the folded weights are recomputed whenever a
parameter or running statistic changed (tensor version counters), so the view never goes stale.
Pre-activation nets (BN -> ReLU -> conv: WRN, PreAct ResNet) have nothing to fold: ``fold_bn``
returns None and the model itself is attacked.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_PAIRS = ((nn.Conv2d, nn.BatchNorm2d), (nn.Linear, nn.BatchNorm1d))


class FoldedLayer(nn.Module):
    """A conv or linear followed by its eval-mode BatchNorm, as one layer with folded weights."""

    def __init__(self, layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.layer, self.bn = layer, bn
        self._key: tuple = ()
        self._w: Optional[torch.Tensor] = None
        self._b: Optional[torch.Tensor] = None

    def _tensors(self) -> list[torch.Tensor]:
        ts = [self.layer.weight, self.bn.running_mean, self.bn.running_var]
        ts += [t for t in (self.layer.bias, self.bn.weight, self.bn.bias) if t is not None]
        return ts

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        key = tuple((t.data_ptr(), t._version) for t in self._tensors())
        if key != self._key:
            with torch.no_grad():
                bn = self.bn
                s = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    s = s * bn.weight
                shift = bn.bias if bn.bias is not None else torch.zeros_like(s)
                bias = self.layer.bias if self.layer.bias is not None else torch.zeros_like(s)
                w = self.layer.weight * s.view(-1, *[1] * (self.layer.weight.dim() - 1))
                if w.dim() == 4:
                    # NHWC strides spelled out (``contiguous`` keeps a 1-channel weight's NCHW strides):
                    # the weight's layout picks oneDNN's/cuDNN's NHWC kernels for the whole net.
                    w = w.to(memory_format=torch.channels_last)
                self._w, self._b = w, (bias - bn.running_mean) * s + shift
            self._key = key
        return self._w, self._b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.folded()
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, b)
        return F.linear(x, w, b)


def _foldable(layer: nn.Module, bn: nn.Module) -> bool:
    pair = any(isinstance(layer, a) and type(bn) is b for a, b in _PAIRS)
    return (pair and not bn.training and bn.track_running_stats and bn.running_mean is not None
            and layer.weight.shape[0] == bn.num_features)


def _fold(module: nn.Module) -> tuple[nn.Module, int]:
    """A shallow copy of ``module`` with foldable (layer, BN) pairs of its Sequentials replaced."""
    children = dict(module._modules)
    n = 0
    if isinstance(module, nn.Sequential):
        names = list(children)
        for a, b in zip(names, names[1:]):
            layer, bn = children[a], children[b]
            if not _foldable(layer, bn):  # also skips a layer folded at the previous pair
                continue
            children[a], children[b] = FoldedLayer(layer, bn), nn.Identity()
            n += 1
    for name, child in children.items():
        if child is not None and not isinstance(child, (FoldedLayer, nn.Identity)):
            new, k = _fold(child)
            if k:
                children[name], n = new, n + k
    if not n:
        return module, 0
    out = copy.copy(module)  # shares parameters, buffers and hooks; only the child table is new
    out._modules = children
    return out, n


def fold_bn(model: nn.Module) -> Optional[nn.Module]:
    """The eval-mode function of ``model`` with its BatchNorms folded, or None if none folds.

    Build it after ``model.eval()`` (only BatchNorms in eval mode are folded) and use it while the
    model's weights are what the attack should see; it follows later weight updates by itself.
    """
    folded, n = _fold(model)
    return folded if n else None
