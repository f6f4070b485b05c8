"""The one registry of training strategies: their names and one-line descriptions.

Every layer reads it: the trainer's CLI choices and RunConfig validation (trainer/config.py), the
classes in trainer/strategies.py (checked against it on import), the dashboard's launch form, and
reproduce's choices and the results tables' row names (``label``). It lives in the store because the dashboard may not
import the trainer and the store may import neither. Adding a strategy: one entry here, one class
in trainer/strategies.py with the same ``name``, and its test.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StrategyInfo:
    name: str         # the --strategy value, config.json's "strategy" and the tables' row name
    description: str  # one line: what it trains on, and whose method it is


_ALL = (
    StrategyInfo("unsecured", "clean examples only (no attack)"),
    StrategyInfo("standard", "PGD-K with random start, step eps/4 (Madry et al. 2018)"),
    StrategyInfo("curriculum", "PGD-k lessons k = 0..K, k grows when held-out PGD-k accuracy "
                 "plateaus, after rolling back to the lesson's best weights (Cai et al. 2018)"),
    StrategyInfo("curriculum-fixed", "PGD-k lessons on a fixed schedule, "
                 "T'/(K+1) epochs each: for budgets too short for a plateau rule"),
    StrategyInfo("dynamic", "Algorithm 1: PGD-K, each example stops once its FOSC <= c_t "
                 "(Wang et al. 2019)"),
    StrategyInfo("fgsm-pgd", "FGSM for the first epochs, then PGD-K (Wang et al. 2019, §3.2)"),
    StrategyInfo("fat", "early-stopped PGD: tau more steps after the first misclassification "
                 "(Zhang et al. 2020)"),
    StrategyInfo("trades", "CE(clean) + beta * KL(p(x_0) || p(x_adv)) (Zhang et al. 2019)"),
    StrategyInfo("mart", "boosted CE on x_adv + beta * KL weighted by 1 - p_true(x_0) (Wang et al. 2020)"),
    StrategyInfo("fast", "FGSM from a random start, step 1.25*eps: fast adversarial training (Wong et al. 2020)"),
)

REGISTRY: dict[str, StrategyInfo] = {s.name: s for s in _ALL}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def label(cfg: dict) -> str:
    """The name a table gives a run's rows, from its config.json (a dict): the strategy's name;
    a config saved before curriculum-fixed existed says ``curriculum_mode: fixed`` instead."""
    name = str(cfg.get("strategy", "?"))
    return "curriculum-fixed" if name == "curriculum" and cfg.get("curriculum_mode") == "fixed" else name
