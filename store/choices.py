"""The trainer's fixed choices that the dashboard's launch form offers: models, presets, devices.

One registry each, read by every layer: trainer/config.py (CLI choices, RunConfig validation),
trainer/models.py (its builders are checked against ``MODELS`` on import) and dashboard/jobs.py (the
form and the argv check). It lives in the store because the dashboard may not import the trainer.
What a preset *sets* stays in trainer/config.py (training settings); its name and line are here.
"""
from __future__ import annotations

MODELS: dict[str, str] = {
    "cnn4": "the authors' MNIST CNN: 2 conv + 2 dense layers",
    "cnn8": "the paper's CIFAR-10 CNN: 6 conv + 2 dense layers",
    "wrn34_10": "WideResNet-34-10 (Madry et al.'s and TRADES' CIFAR-10 model)",
    "preact_resnet18": "PreAct ResNet-18 (fast adversarial training's CIFAR-10 model)",
}

PRESETS: dict[str, str] = {
    "quick": "a few minutes on 2 CPU cores, on the offline MNIST digits (no download)",
    "paper-mnist": "§5.1 MNIST: CNN4, eps 0.3, 50 epochs",
    "paper-cifar10": "§5.1 CIFAR-10: CNN8, eps 8/255, 120 epochs",
    "trades-mnist": "TRADES' official MNIST settings: beta 1, 40 steps of 0.01",
}

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")
