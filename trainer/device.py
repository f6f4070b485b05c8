"""The one place that turns a device name (auto, cpu, cuda) into a torch.device.

Asked before anything is created (``trainer.run``, ``trainer.evaluate``), so ``--device cuda`` on a
machine without CUDA is a one-line error, not a run stuck at "created".
"""
from __future__ import annotations

import torch

from trainer.config import ConfigError


class DeviceError(ConfigError):
    """The device asked for is not there; str(e) is one line for the user."""


def pick_device(name: str, rank: int = 0) -> torch.device:
    """``name`` on this machine (``rank``: which GPU under torchrun), or DeviceError."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" or name.startswith("cuda:"):  # 'cuda:1': a device the caller already picked
        if not torch.cuda.is_available():
            raise DeviceError("device cuda requested but no CUDA device is available; use --device cpu")
        return torch.device("cuda", rank % torch.cuda.device_count()) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise DeviceError(f"unknown device {name!r}; choose one of: auto, cpu, cuda")
    return torch.device("cpu")
