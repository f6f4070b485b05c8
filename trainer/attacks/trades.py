"""TRADES' inner maximisation (Zhang et al. 2019): maximise KL(p(x_0) || p(x)) from a tiny Gaussian start."""
import torch

from trainer.attacks import losses
from trainer.attacks.base import Attack


class TradesKL(Attack):
    name = "trades"

    def target(self, model, x0, y):
        with torch.no_grad():
            return torch.softmax(losses.at_least_fp32(model(x0)), dim=1)

    def start(self, x0, clip=True):
        if not self.random_start:
            return x0.clone()
        x = x0 + 0.001 * torch.randn_like(x0)
        return x.clamp(0, 1) if clip else x

    def objective(self, logits, target):
        return losses.kl_to_clean(logits, target)
