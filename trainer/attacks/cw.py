"""CW-inf: the Carlini-Wagner margin loss maximised by PGD (30 steps of eps/4 in the paper's eval)."""
from trainer.attacks import losses
from trainer.attacks.base import Attack


class CWInf(Attack):
    name = "cw"

    def __init__(self, eps: float, alpha: float, steps: int = 30, random_start: bool = True,
                 kappa: float = 50.0, **kw):
        super().__init__(eps, alpha, steps, random_start=random_start, **kw)
        self.kappa = kappa

    def objective(self, logits, target):
        return losses.cw_margin(logits, target, self.kappa)
