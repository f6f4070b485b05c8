"""TRADES' inner maximisation (Zhang et al. 2019): maximise KL(p(x_0) || p(x)) from a tiny Gaussian start."""
import torch

from trainer.attacks import losses
from trainer.attacks.base import Attack


class TradesKL(Attack):
    name = "trades"

    def target(self, model, x0, y):
        with torch.no_grad():
            return torch.softmax(model(x0).float(), dim=1)

    def start(self, x0):
        if not self.random_start:
            return x0.clone()
        return (x0 + 0.001 * torch.randn_like(x0)).clamp(0, 1)

    def objective(self, logits, target):
        return losses.kl_to_clean(logits, target)
