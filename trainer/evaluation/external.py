"""AutoAttack (Croce & Hein 2020) at its reference budget, from torchattacks 3.5.1's members.

Why torchattacks and not its ``AutoAttack`` class: ``torchattacks.AutoAttack(version='standard')``
builds APGD, APGD-T and FAB-T with their default ``steps=10`` (torchattacks issue #196), not the 100
iterations of the reference code (fra31/auto-attack, ``version='standard'``: APGD-CE 100 it., APGD-T
9 targets x 100 it., FAB-T 9 targets x 100 it., Square 5,000 queries, one restart each). So the
members are built here with the reference budget; every other default already matches the reference
(APGD rho 0.75; FAB alpha_max 0.1, eta 1.05, beta 0.9; Square p_init 0.8, margin loss, rescaled
schedule). The composition is the reference one, written out instead of ``torchattacks.MultiAttack``
(which does the same) so that the robust accuracy after each member is recorded: only the clean-correct
examples are attacked, and each member attacks only what the previous ones left correct. Each member
reseeds torch with ``seed`` when it starts, as in the reference. torchattacks (pure Python, no
compiled parts) is a well-kept library whose members are tested against the reference implementation;
ART's AutoAttack would pull in a much larger dependency for the same members.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from store import evals as ev

# Reference budget (fra31/auto-attack, AutoAttack(version='standard')).
REFERENCE = {"apgd-ce": dict(steps=100, n_restarts=1, loss="ce"),
             "apgd-t": dict(steps=100, n_restarts=1, n_classes=10),   # 9 = n_classes - 1 target classes
             "fab-t": dict(steps=100, n_restarts=1, multi_targeted=True, n_classes=10),
             "square": dict(n_queries=5000, n_restarts=1, p_init=0.8)}
COMPOSITES = {"autoattack": ev.AUTOATTACK_MEMBERS, "apgd-ce+t": ("apgd-ce", "apgd-t")}
NAMES = (*COMPOSITES, *REFERENCE)


class MissingLibrary(ImportError):
    """torchattacks is not installed; str(e) is one line for the user."""


def torchattacks_module():
    try:
        import torchattacks
    except ImportError:
        raise MissingLibrary("attacks autoattack/apgd-ce+t/apgd-ce/apgd-t/fab-t/square need torchattacks "
                             "(pip install --no-deps torchattacks==3.5.1)") from None
    return torchattacks


def member(name: str, model, eps: float, seed: int = 0):
    """One AutoAttack member, at the reference budget."""
    ta = torchattacks_module()
    cls = {"apgd-ce": ta.APGD, "apgd-t": ta.APGDT, "fab-t": ta.FAB, "square": ta.Square}[name]
    return cls(model, norm="Linf", eps=eps, seed=seed, **REFERENCE[name])


@dataclass
class ExternalResult:
    x_adv: torch.Tensor
    stages: dict[str, int]  # robust examples left after clean and after each member


class ExternalAttack:
    """A torchattacks member or composition behind our attack call signature (crafted on ``model``)."""

    def __init__(self, name: str, eps: float, seed: int = 0):
        if name not in NAMES:
            raise ValueError(f"unknown external attack {name!r}")
        self.name, self.eps, self.seed = name, eps, seed
        self.members = COMPOSITES.get(name, (name,))

    def __call__(self, model, x, y, exact_final: bool = False) -> ExternalResult:
        x_adv = x.clone()
        with torch.no_grad():
            robust = model(x).argmax(1) == y
        stages = {"clean": int(robust.sum())}
        for name in self.members:
            idx = robust.nonzero().flatten()
            if idx.numel():
                xa = member(name, model, self.eps, self.seed)(x[idx], y[idx]).detach()
                with torch.no_grad():
                    fooled = model(xa).argmax(1) != y[idx]
                x_adv[idx[fooled]] = xa[fooled]
                robust[idx[fooled]] = False
            stages[name] = int(robust.sum())
        return ExternalResult(x_adv, stages)
