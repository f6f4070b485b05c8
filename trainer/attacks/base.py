"""One PGD engine behind every attack, with FOSC, the stop rule V and trajectories built in.

An attack is a loss (CE, CW margin, TRADES KL) plus a start (random or not), a step size and a step
count. ``run`` performs Algorithm 1's inner loop: at each step it takes the input gradient of the
per-example loss, computes every example's FOSC from that same gradient, lets the stop rule retire
examples (a retired example never moves again), and moves the rest. With ``compact`` the gradient
is computed only for still-active examples (BatchNorm in eval mode makes that exact); without it a
static-shape mask keeps shapes fixed and the loop free of host syncs.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from trainer import fosc as fosc_mod
from trainer.attacks import losses

# stop_rule(k, fosc, logits, target, rows) -> bool tensor over ``rows``: True retires the example.
StopRule = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class AttackResult:
    x_adv: torch.Tensor          # (B, ...) in [0,1] and in the eps-ball
    fosc: torch.Tensor           # (B,) float32: FOSC of x_adv (see ``fosc_exact``)
    loss: torch.Tensor           # (B,) attack objective at x_adv
    steps: torch.Tensor          # (B,) int32: steps each example moved
    fosc_exact: bool             # False: examples that took every step carry the FOSC of the iterate before
    # From the same gradient as ``fosc``: FOSC over the eps-ball intersected with [0,1] (NaN for L2,
    # which has no closed form there) and ||g||_1 (a vanishing gradient reads as FOSC ~ 0: masking).
    fosc_box: Optional[torch.Tensor] = None
    grad_l1: Optional[torch.Tensor] = None
    trajectory: Optional[dict[str, torch.Tensor]] = None  # step (K+1,), fosc/fosc_box/grad_l1/loss/active (K+1, R)


@contextlib.contextmanager
def input_grad_only(model: torch.nn.Module):
    """No weight-gradient work during the attack: only the input needs a gradient."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)


class Attack:
    """Base class: subclasses set the objective and the start; ``__call__`` runs the engine."""

    name = "attack"

    def __init__(self, eps: float, alpha: float, steps: int, random_start: bool = True, norm: str = "linf",
                 fosc_set: str = "ball", bf16: bool = False, step_noise: float = 0.0):
        if eps <= 0 or alpha <= 0 or steps < 1:
            raise ValueError("eps and alpha must be > 0 and steps >= 1")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.random_start, self.norm, self.fosc_set, self.bf16 = random_start, norm, fosc_set, bf16
        self.step_noise = float(step_noise)  # FAT's omega: N(0, omega^2) added to every step, then projected

    # ---- what subclasses choose ---------------------------------------------------------------
    def objective(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """What the objective compares logits with (labels; TRADES: clean probabilities)."""
        return y

    def start(self, x0: torch.Tensor, clip: bool = True) -> torch.Tensor:
        if not self.random_start:
            return x0.clone()
        if self.norm == "linf":
            noise = torch.empty_like(x0).uniform_(-self.eps, self.eps)
        else:
            noise = torch.randn_like(x0)
            noise = noise / noise.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x0.dim() - 1))
            noise = noise * self.eps * torch.rand(x0.shape[0], *[1] * (x0.dim() - 1), device=x0.device, dtype=x0.dtype)
        return (x0 + noise).clamp(0, 1) if clip else x0 + noise

    # ---- the engine ---------------------------------------------------------------------------
    def grad(self, model, x: torch.Tensor, target: torch.Tensor):
        """(input gradient of the summed per-example objective, per-example objective, logits)."""
        x = x.detach().requires_grad_(True)
        ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with torch.enable_grad():
            with ctx:
                logits = model(x)
            loss = self.objective(logits, target)  # float32, or float64 for a float64 model
            (g,) = torch.autograd.grad(loss.sum(), x)
        # g keeps x's precision for the step; FOSC casts it to float32 itself.
        return g, loss.detach().float(), losses.at_least_fp32(logits.detach())

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            x = torch.minimum(torch.maximum(x, x0 - self.eps), x0 + self.eps)
        else:
            d = x - x0
            n = d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.dim() - 1))
            x = x0 + d * (self.eps / n).clamp(max=1.0)
        return x.clamp(0, 1)

    def ascent(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            x = x + self.alpha * g.sign().to(x.dtype)
        else:
            n = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
            x = x + self.alpha * (g / n).to(x.dtype)
        return x + self.step_noise * torch.randn_like(x) if self.step_noise else x

    def fosc_of(self, x: torch.Tensor, center: torch.Tensor, x0: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        if self.fosc_set == "box":
            lo, hi = fosc_mod.box_bounds(x0, self.eps)
            return fosc_mod.fosc_box(x, g, lo, hi)
        return fosc_mod.fosc(x, center, g, self.eps, self.norm)

    def measures(self, x: torch.Tensor, center: torch.Tensor, x0: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """(3, B): FOSC as configured, box FOSC and ||g||_1, all from the one gradient ``g``."""
        c = self.fosc_of(x, center, x0, g)
        if self.norm == "linf":
            lo, hi = fosc_mod.box_bounds(x0, self.eps)
            c_box = c if self.fosc_set == "box" else fosc_mod.fosc_box(x, g, lo, hi)
        else:
            c_box = torch.full_like(c, float("nan"))
        return torch.stack([c, c_box, fosc_mod.grad_l1(g)])

    def __call__(self, model: torch.nn.Module, x0: torch.Tensor, y: torch.Tensor, *,
                 stop_rule: Optional[StopRule] = None, record: Optional[torch.Tensor] = None,
                 compact: bool = False, exact_final: bool = True, center_on_start: bool = False) -> AttackResult:
        """Attack ``x0`` (never modified). ``record``: positions in the batch whose per-step FOSC and
        loss are returned. ``center_on_start``: as the authors' code, the random start is not clipped
        to [0,1] and FOSC is centred on it (the first step's projection clips)."""
        x0 = x0.detach()
        B, dev = x0.shape[0], x0.device
        with input_grad_only(model):
            target = self.target(model, x0, y)
            x = self.start(x0, clip=not center_on_start)
            center = x.clone() if center_on_start else x0
            steps = torch.zeros(B, dtype=torch.int32, device=dev)
            out = torch.full((4, B), float("nan"), device=dev)  # fosc, fosc_box, grad_l1, loss
            active = torch.ones(B, dtype=torch.bool, device=dev)
            rows = torch.arange(B, device=dev)
            traj = _Trajectory(record, B, dev)
            for k in range(self.steps):
                xr = x[rows]
                g, loss, logits = self.grad(model, xr, target[rows])
                m = torch.cat([self.measures(xr, center[rows], x0[rows], g), loss[None]])
                c = m[0]
                act = active[rows]
                stop = act & stop_rule(k, c, logits, target[rows], rows) if stop_rule is not None else act & False
                # The last measures seen for every computed row; retired rows keep theirs from now on.
                out[:, rows] = torch.where(act, m, out[:, rows])
                traj.add(k, rows, m, act)
                active[rows] = act & ~stop
                move = act & ~stop
                x[rows] = torch.where(_expand(move, xr), self.project(self.ascent(xr, g), x0[rows]), xr)
                steps[rows] += move.int()
                if compact:
                    rows = rows[move]
                    if rows.numel() == 0:
                        break
            fosc_exact = True
            if exact_final:
                # FOSC of where the still-active examples ended (one more gradient, for them only).
                fin = rows if compact else torch.arange(B, device=dev)
                if fin.numel():
                    xr = x[fin]
                    g, loss, _ = self.grad(model, xr, target[fin])
                    m = torch.cat([self.measures(xr, center[fin], x0[fin], g), loss[None]])
                    act = active[fin]
                    out[:, fin] = torch.where(act, m, out[:, fin])
                    traj.add(self.steps, fin, m, act)
            else:
                fosc_exact = False
        return AttackResult(x.detach(), out[0], out[3], steps, fosc_exact, fosc_box=out[1], grad_l1=out[2],
                            trajectory=traj.result())


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *[1] * (like.dim() - 1))


class _Trajectory:
    """Per-step FOSC and loss of a few recorded examples, gathered without host syncs."""

    def __init__(self, record: Optional[torch.Tensor], batch: int, device):
        self.record = record if record is not None and record.numel() else None
        self.batch, self.device = batch, device
        self.steps: list[int] = []
        self.measures: list[torch.Tensor] = []   # (4, R) each: fosc, fosc_box, grad_l1, loss
        self.active: list[torch.Tensor] = []

    def add(self, k: int, rows: torch.Tensor, m: torch.Tensor, act: torch.Tensor) -> None:
        """``m``: (4, len(rows)) measures of the computed rows at step k."""
        if self.record is None:
            return
        full_m = torch.full((4, self.batch), float("nan"), device=self.device)
        full_a = torch.zeros(self.batch, dtype=torch.bool, device=self.device)
        # A retired example has no new FOSC: NaN whether its row was computed (mask) or not (compact).
        full_m[:, rows], full_a[rows] = torch.where(act, m, float("nan")), act
        self.steps.append(k)
        self.measures.append(full_m[:, self.record])
        self.active.append(full_a[self.record])

    def result(self) -> Optional[dict[str, torch.Tensor]]:
        if self.record is None or not self.steps:
            return None
        m = torch.stack(self.measures)  # (K+1, 4, R)
        return {"step": torch.tensor(self.steps, dtype=torch.int16), "pos": self.record,
                "fosc": m[:, 0], "fosc_box": m[:, 1], "grad_l1": m[:, 2], "loss": m[:, 3],
                "active": torch.stack(self.active)}
