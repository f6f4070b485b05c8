"""FGSM: one signed-gradient step of size eps from the clean image (no random start)."""
from trainer.attacks import losses
from trainer.attacks.base import Attack


class FGSM(Attack):
    name = "fgsm"

    def __init__(self, eps: float, norm: str = "linf", fosc_set: str = "ball", bf16: bool = False, **_):
        super().__init__(eps, eps, 1, random_start=False, norm=norm, fosc_set=fosc_set, bf16=bf16)

    def objective(self, logits, target):
        return losses.cross_entropy(logits, target)
