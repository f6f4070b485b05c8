"""What each strategy asks of the attack and of the loss, epoch by epoch.

A strategy turns (epoch, its own state) into an :class:`EpochPlan` (which attack, how many steps,
the Dynamic threshold c_t, FAT's tau) and a stop rule for the attack, and says how the training
loss is formed. State that must survive a resume (curriculum's k, an auto-estimated c_max, values a
user changed through the control file) is in ``state_dict``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from store import strategies as registry
from store.schedule import c_t as schedule_c_t
from trainer.attacks import FGSM, PGD, TradesKL, losses
from trainer.attacks.base import Attack, StopRule
from trainer.config import RunConfig


@dataclass
class EpochPlan:
    attack: Optional[str]      # 'pgd', 'fgsm', 'trades' or None (clean examples)
    steps: int                 # K for this epoch (0 with no attack)
    c_t: float = math.nan      # Dynamic's FOSC threshold, NaN for other strategies
    tau: int = -1              # FAT's extra steps after the first misclassification, -1 otherwise
    step_noise: float = 0.0    # FAT's omega: std of Gaussian noise added at every PGD step
    mix: bool = False          # Curriculum's batch mixing: PGD-0..k over the batch's positions


class Strategy:
    name = "standard"

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg
        self.state: dict = {}

    def plan(self, epoch: int) -> EpochPlan:
        return EpochPlan("pgd", self.cfg.steps)

    def attack(self, plan: EpochPlan) -> Attack:
        """The attack that makes this epoch's training examples (plan.attack is not None)."""
        return build_attack(plan.attack, self.cfg, plan.steps, plan.step_noise)

    def stop_rule(self, plan: EpochPlan, batch_size: int, device) -> Optional[StopRule]:
        return None

    def train_loss(self, model, x0, x_adv, y, epoch: int):
        """(per-example training loss (B,), logits on the trained-on input). Model is in train mode."""
        logits = model(x_adv)
        return losses.cross_entropy(logits, y), logits

    def end_epoch(self, epoch: int, heldout_acc: Callable[[int], float], weights: Callable[[], dict]) -> Optional[dict]:
        """After an epoch's update steps. ``heldout_acc(k)``: the current model's accuracy on the
        held-out split against PGD-k (k = 0: clean); ``weights()``: a copy of the current weights.
        Returns weights for the loop to roll the model back to, or None."""
        return None

    def state_dict(self) -> dict:
        return dict(self.state)

    def load_state_dict(self, state: dict) -> None:
        self.state.update(state)


class Unsecured(Strategy):
    name = "unsecured"

    def plan(self, epoch):
        return EpochPlan(None, 0)

    def train_loss(self, model, x0, x_adv, y, epoch):
        logits = model(x0)
        return losses.cross_entropy(logits, y), logits


class Standard(Strategy):
    name = "standard"


class FgsmPgd(Strategy):
    """FGSM for the first ``fgsm_epochs`` epochs, then PGD (paper §3.2, Fig. 3)."""
    name = "fgsm-pgd"

    def plan(self, epoch):
        return EpochPlan("fgsm", 1) if epoch < self.cfg.fgsm_epochs else EpochPlan("pgd", self.cfg.steps)


class Dynamic(Strategy):
    """Algorithm 1: PGD whose examples stop once their FOSC <= c_t = max(c_max - t c_max / T', 0)."""
    name = "dynamic"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.state = {"c_max": None if cfg.c_max == "auto" else float(cfg.c_max), "t_prime": float(cfg.t_prime)}

    def c_t(self, epoch: int) -> float:
        c_max = self.state["c_max"]
        if c_max is None:
            raise RuntimeError("c_max is 'auto' and has not been estimated yet")
        return schedule_c_t(epoch, c_max, self.state["t_prime"])

    def plan(self, epoch):
        if self.state["c_max"] is None and self.cfg.c_max_auto_at == "warmup":
            # Warm-up before c_max is estimated: c_t = inf, so Algorithm 1 takes one step per example.
            return EpochPlan("pgd", self.cfg.steps, c_t=math.inf)
        return EpochPlan("pgd", self.cfg.steps, c_t=self.c_t(epoch))

    def train_loss(self, model, x0, x_adv, y, epoch):
        if self.cfg.official_code_compat and epoch >= 1:
            w = official_loss_weight(model, x_adv, y)  # before the train-mode forward moves BN statistics
            ce_vec, logits = super().train_loss(model, x0, x_adv, y, epoch)
            return w * ce_vec, logits
        return super().train_loss(model, x0, x_adv, y, epoch)

    def stop_rule(self, plan, batch_size, device):
        threshold = plan.c_t

        def rule(k, c, logits, target, rows):
            # Algorithm 1 always takes the first step; from then on V_i = 0 once FOSC_i <= c_t.
            if k == 0:
                return torch.zeros_like(c, dtype=torch.bool)
            return c <= threshold
        return rule


def official_loss_weight(model, x_adv, y) -> torch.Tensor:
    """The authors' per-example loss weight (train_models.py: ``loss_weight`` from ``model.predict``):
    the example's own adversarial cross-entropy under the inference-mode model, not normalised, as
    a constant. Keras' ``train_on_batch(sample_weight=w)`` then minimises mean(w * CE)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        w = losses.cross_entropy(model(x_adv), y)
    model.train(was_training)
    return w.detach()


class Curriculum(Strategy):
    """Cai et al. 2018 (CAT): lessons k = 0, 1, ..., K, lesson k trained on PGD-k examples (k = 0:
    clean). After each epoch the model's held-out accuracy against PGD-k is measured; once it has
    not improved for ``curriculum_patience`` epochs, the weights roll back to the lesson's best and
    k grows. At k = K training goes on at K. ``--curriculum-mixing``: each batch mixes PGD-0..k
    (CAT's batch mixing; example i of a batch of B gets i*(k+1)//B steps, PGD-0 being the random start)."""
    name = "curriculum"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.state = {"k": 0, "best": -1.0, "since_best": 0, "best_weights": None}

    def k(self, epoch: int) -> int:
        return int(self.state["k"])

    def plan(self, epoch):
        k = self.k(epoch)
        if self.cfg.curriculum_mixing and k > 0:
            return EpochPlan("pgd", k, mix=True)
        return EpochPlan("pgd", k) if k > 0 else EpochPlan(None, 0)

    def stop_rule(self, plan, batch_size, device):
        if not plan.mix:
            return None
        budget = torch.arange(batch_size, device=device) * (plan.steps + 1) // batch_size

        def rule(k, c, logits, target, rows):
            return budget[rows] <= k
        return rule

    def end_epoch(self, epoch, heldout_acc, weights):
        st = self.state
        if st["k"] >= self.cfg.steps:
            return None
        acc = heldout_acc(st["k"])
        if acc > st["best"]:  # kept in the checkpoint's strategy state, so a resume can roll back too
            st.update(best=acc, since_best=0, best_weights=weights())
            return None
        st["since_best"] += 1
        if st["since_best"] < self.cfg.curriculum_patience:
            return None
        best = st["best_weights"]
        st.update(k=st["k"] + 1, best=-1.0, since_best=0, best_weights=None)
        return best


class CurriculumFixed(Curriculum):
    """A fixed curriculum for budgets too short for a plateau rule: each k = 0..K gets T'/(K+1)
    epochs, so k = K from epoch T'*K/(K+1) on; no held-out measurement, no rollback."""
    name = "curriculum-fixed"

    def k(self, epoch):
        return min(self.cfg.steps, int(epoch * (self.cfg.steps + 1) / max(self.cfg.t_prime, 1e-9)))

    def end_epoch(self, epoch, heldout_acc, weights):
        return None


class Fat(Strategy):
    """Zhang et al. 2020 (FAT): early-stopped PGD; an example gets tau more steps after it is first
    misclassified, tau = 0, 1, 2 as training passes ``fat_tau_epochs``."""
    name = "fat"

    def tau(self, epoch: int) -> int:
        return sum(epoch >= e for e in self.cfg.fat_tau_epochs)

    def plan(self, epoch):
        return EpochPlan("pgd", self.cfg.steps, tau=self.tau(epoch), step_noise=self.cfg.fat_omega)

    def stop_rule(self, plan, batch_size, device):
        budget = torch.full((batch_size,), plan.tau, dtype=torch.int32, device=device)

        def rule(k, c, logits, target, rows):
            wrong = logits.argmax(1) != target
            stop = wrong & (budget[rows] <= 0)
            budget[rows] -= (wrong & ~stop).int()
            return stop
        return rule



class Trades(Strategy):
    """Zhang et al. 2019: CE on clean examples + beta * KL(p(x_0) || p(x_adv)), KL maximised inside."""
    name = "trades"

    def plan(self, epoch):
        return EpochPlan("trades", self.cfg.steps)

    def train_loss(self, model, x0, x_adv, y, epoch):
        clean, adv = model(x0), model(x_adv)
        kl = F.kl_div(F.log_softmax(adv.float(), 1), F.softmax(clean.float(), 1), reduction="none").sum(1)
        return losses.cross_entropy(clean, y) + self.cfg.trades_beta * kl, adv


class Fast(Strategy):
    """Wong et al. 2020 ("Fast is better than free"): FGSM from a uniform random start in the
    eps-ball, one step of 1.25*eps, projected back (their code's alpha = 1.25 * epsilon)."""
    name = "fast"

    def plan(self, epoch):
        return EpochPlan("pgd", 1)

    def attack(self, plan):
        cfg = self.cfg
        return PGD(cfg.eps, 1.25 * cfg.eps, 1, random_start=True, norm=cfg.norm, fosc_set=cfg.fosc_set, bf16=cfg.bf16)


class Mart(Strategy):
    """Wang et al. 2020 (MART), as the authors' mart.py: PGD-K on the CE from a N(0, 0.001^2) start;
    loss = CE(x_adv) - log(1 - p_adv[best wrong class]) + beta * KL(p(x_0) || p(x_adv)) * (1 - p_true(x_0)),
    beta = --trades-beta (6 by default, as theirs)."""
    name = "mart"

    class _Pgd(PGD):
        def start(self, x0, clip=True):
            x = x0 + 0.001 * torch.randn_like(x0)
            return x.clamp(0, 1) if clip else x

    def attack(self, plan):
        cfg = self.cfg
        return self._Pgd(cfg.eps, cfg.step_size, plan.steps, norm=cfg.norm, fosc_set=cfg.fosc_set, bf16=cfg.bf16)

    def train_loss(self, model, x0, x_adv, y, epoch):
        clean, adv = model(x0), model(x_adv)  # the authors' order (it sets BatchNorm's running statistics)
        p_adv, p_clean = F.softmax(adv.float(), 1), F.softmax(clean.float(), 1)
        top2 = p_adv.argsort(1)[:, -2:]
        wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])  # the most likely wrong class
        boosted = losses.cross_entropy(adv, y) - torch.log(1.0001 - p_adv.gather(1, wrong[:, None]).squeeze(1) + 1e-12)
        kl = F.kl_div(torch.log(p_adv + 1e-12), p_clean, reduction="none").sum(1)
        p_true = p_clean.gather(1, y[:, None]).squeeze(1)
        return boosted + self.cfg.trades_beta * kl * (1.0000001 - p_true), adv


def build_attack(kind: str, cfg: RunConfig, steps: int, step_noise: float = 0.0) -> Attack:
    kw = dict(norm=cfg.norm, fosc_set=cfg.fosc_set, bf16=cfg.bf16)
    if kind == "fgsm":
        return FGSM(cfg.eps, **kw)
    if kind == "trades":
        return TradesKL(cfg.eps, cfg.step_size, steps, random_start=True, **kw)
    return PGD(cfg.eps, cfg.step_size, steps, random_start=cfg.random_start, step_noise=step_noise, **kw)


def _classes(base=Strategy) -> list[type[Strategy]]:
    return [c for sub in base.__subclasses__() for c in (sub, *_classes(sub))]


# Every class defined here, by name; it must be what store/strategies.py (the registry every layer reads) lists.
STRATEGIES: dict[str, type[Strategy]] = {c.name: c for c in _classes()}
if set(STRATEGIES) != set(registry.NAMES):
    raise ImportError(f"trainer/strategies.py and store/strategies.py disagree: {sorted(set(STRATEGIES) ^ set(registry.NAMES))}")


def build_strategy(cfg: RunConfig) -> Strategy:
    if cfg.strategy == "curriculum" and cfg.curriculum_mode == "fixed":  # configs saved before curriculum-fixed
        return CurriculumFixed(cfg)
    return STRATEGIES[cfg.strategy](cfg)
