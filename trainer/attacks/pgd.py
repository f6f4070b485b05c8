"""PGD-K with random start on the cross-entropy (Madry et al. 2018)."""
from trainer.attacks import losses
from trainer.attacks.base import Attack


class PGD(Attack):
    name = "pgd"

    def objective(self, logits, target):
        return losses.cross_entropy(logits, target)
