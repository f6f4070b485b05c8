"""Attacks, one per module, all behind :class:`trainer.attacks.base.Attack`."""
from trainer.attacks.base import Attack, AttackResult
from trainer.attacks.cw import CWInf
from trainer.attacks.fgsm import FGSM
from trainer.attacks.pgd import PGD
from trainer.attacks.trades import TradesKL

__all__ = ["Attack", "AttackResult", "CWInf", "FGSM", "PGD", "TradesKL"]
