"""The fast paths compute what the plain paths compute (fp32, float tolerance).

- the trainer's training step (BN folded into convs, weights frozen while attacking, store writer
  thread) against the plain eager reference step of bench/train_step.py: same adversarial examples,
  same FOSC, same weights after a few steps;
- Dynamic's compaction (gradients of still-active rows only) against the static-shape mask;
- folding BatchNorm keeps the function and its input gradient, and follows weight updates;
- the benchmarks run at tiny size and print their ratio lines; --write-doc keeps other sections.
"""
from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import update_doc
from bench import train_step
from bench.train_step import Variant, make_ctx, patched, reference_attack, reference_step
from trainer import loop
from trainer.attacks import PGD
from trainer.attacks.fold import FoldedLayer, fold_bn
from trainer.config import RunConfig
from trainer.data import load_dataset
from trainer.models import build_model
from trainer.strategies import Dynamic, EpochPlan

ROOT = Path(__file__).resolve().parent.parent
B = 32  # a power of two: the batch-mean gradient is the summed one times an exact 2**-5


@pytest.fixture(scope="module")
def digits():
    data, _ = load_dataset("mnist-demo", None, torch.device("cpu"), n_train=3 * B, n_test=1)
    return data


def _cnn4(seed: int = 0) -> torch.nn.Module:
    """A partly random CNN4 whose BatchNorm running statistics have moved off their init."""
    torch.manual_seed(seed)
    model = build_model("cnn4", 1, 10, 28)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(64, 1, 28, 28))
    return model.eval()


def _train_both(cfg, digits, tmp_path, fold: bool):
    """Three training steps of the trainer (BN folded or not) and of the plain reference, same seeds."""
    model = _cnn4()
    ref_model = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    v = Variant("fast", fold=fold)
    ctx = make_ctx(cfg, v, model, digits, tmp_path / f"run-{fold}")
    rows: list = []
    with patched(v, ctx.net):
        for b in range(3):
            ids = torch.arange(b * B, (b + 1) * B)
            torch.manual_seed(100 + b)
            loop.train_batch(ctx, 0, b, ctx.strategy.plan(0), ids, torch.tensor([0]))
            torch.manual_seed(100 + b)
            reference_step(ref_model, ref_opt, digits.x_train[ids], digits.y_train[ids], ids, cfg.eps,
                           cfg.step_size, cfg.steps, rows)
    ctx.writer.end_epoch(0)
    ctx.writer.close()
    assert len(rows) == 3 * B and any((tmp_path / f"run-{fold}" / "examples").rglob("*.parquet"))
    return ctx.model.state_dict(), ref_model.state_dict()


def test_trainer_step_matches_plain_reference(digits, tmp_path):
    cfg = RunConfig(strategy="standard", dataset="mnist-demo", steps=3, batch_size=B, device="cpu",
                    exact_final_fosc=False).validate()
    x0, y = digits.x_train[:B], digits.y_train[:B]
    model = _cnn4()

    def attack(net):
        torch.manual_seed(5)
        return PGD(cfg.eps, cfg.step_size, cfg.steps)(net, x0, y, exact_final=False)
    torch.manual_seed(5)
    x_ref, fosc_ref, _ = reference_attack(copy.deepcopy(model), x0, y, cfg.eps, cfg.step_size, cfg.steps)
    # The engine itself (weights frozen, summed per-example loss) is bit-for-bit the plain loop.
    plain = attack(model)
    assert torch.equal(plain.x_adv, x_ref) and torch.equal(plain.fosc, fosc_ref)
    # Folded BN changes float rounding only: a sign(g) of a near-zero component may flip (<= 0.1% of pixels).
    folded = attack(fold_bn(model))
    assert (folded.x_adv != x_ref).float().mean() <= 1e-3
    torch.testing.assert_close(folded.fosc, fosc_ref, rtol=2e-3, atol=1e-4)

    ours, ref = _train_both(cfg, digits, tmp_path, fold=False)
    for (name, p), q in zip(ours.items(), ref.values()):
        assert torch.equal(p, q), name
    ours, ref = _train_both(cfg, digits, tmp_path, fold=True)
    for (name, p), q in zip(ours.items(), ref.values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=5e-5, msg=lambda m: f"{name}: {m}")


def _dynamic_attack(net, x0, y, c_t: float, compact: bool):
    cfg = RunConfig(strategy="dynamic", steps=10, c_max=1.0).validate()
    rule = Dynamic(cfg).stop_rule(EpochPlan("pgd", 10, c_t=c_t), len(y), x0.device)
    torch.manual_seed(11)
    return PGD(cfg.eps, cfg.step_size, 10)(net, x0, y, stop_rule=rule, compact=compact,
                                           record=torch.arange(len(y)))


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "plain"])
def test_compaction_equals_masking(digits, fold):
    model = _cnn4(seed=3)
    net = fold_bn(model) if fold else model
    x0, y = digits.x_train[:B], digits.y_train[:B]
    # A threshold between observed FOSC values, so that examples stop at different steps.
    probe = _dynamic_attack(net, x0, y, 0.0, compact=False).trajectory["fosc"]
    c_t = float(probe[1:5].flatten().median())
    masked = _dynamic_attack(net, x0, y, c_t, compact=False)
    compact = _dynamic_attack(net, x0, y, c_t, compact=True)
    assert 1 < masked.steps.float().mean() < 9 and len(set(masked.steps.tolist())) >= 3  # some stop early
    assert torch.equal(compact.steps, masked.steps)
    torch.testing.assert_close(compact.x_adv, masked.x_adv, rtol=0, atol=1e-6)
    torch.testing.assert_close(compact.fosc, masked.fosc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compact.loss, masked.loss, rtol=1e-4, atol=1e-5)
    ta, tb = compact.trajectory, masked.trajectory
    assert torch.equal(ta["active"], tb["active"])
    torch.testing.assert_close(ta["fosc"], tb["fosc"], rtol=1e-4, atol=1e-5, equal_nan=True)


def test_folded_bn_is_the_same_function_and_follows_updates(digits):
    model = _cnn4()
    folded = fold_bn(model)
    assert sum(isinstance(m, FoldedLayer) for m in folded.modules()) == 2
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.features)
    x = digits.x_train[:8].clone().requires_grad_(True)
    (g_plain,) = torch.autograd.grad(model(x).logsumexp(1).sum(), x)
    (g_fold,) = torch.autograd.grad(folded(x).logsumexp(1).sum(), x)
    torch.testing.assert_close(g_fold, g_plain, rtol=1e-4, atol=1e-6)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    model(digits.x_train[:16]).sum().backward()  # moves the weights and the BN running statistics
    opt.step()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(folded(digits.x_train[:8]), model(digits.x_train[:8]), rtol=1e-4, atol=1e-5)
    model.train()
    assert fold_bn(model) is None  # train-mode BatchNorm uses batch statistics: nothing to fold
    assert fold_bn(build_model("preact_resnet18", 3).eval()) is None  # BN -> ReLU -> conv


def test_update_doc_keeps_other_sections(tmp_path):
    doc = tmp_path / "B.md"
    doc.write_text("# Benchmarks\n\n## Training step\n\nprose\n\n### Figures: cpu\n\nold\n\n"
                   "## Store writer overhead\n\ntheirs\n")
    update_doc("Training step", "Figures: cpu", "new table", doc)
    update_doc("Training step", "Figures: cuda", "gpu table", doc)
    update_doc("Dynamic cost", "Figures: cpu", "dyn", doc)
    text = doc.read_text()
    assert "old" not in text and text.count("new table") == 1
    assert text.index("prose") < text.index("new table") < text.index("gpu table") < text.index("## Store writer")
    assert "## Store writer overhead\n\ntheirs\n" in text and text.rstrip().endswith("dyn")


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_train_step_bench_runs_tiny_and_prints_ratios():
    r = _bench("bench.train_step", "--models", "cnn4:8", "--steps", "2", "--batches", "1", "--reps", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("cnn4:8")]
    assert [ln.split()[1] for ln in lines] == ["reference", "fosc-lab"]
    ref, ours = (float(ln.split()[2]) for ln in lines)  # ex/s of each variant
    ratio = float(lines[1].split("ratio vs reference")[1].strip().rstrip("x"))
    assert ref > 0 and ours > 0
    assert ratio == pytest.approx(ours / ref, abs=0.006)  # the printed ratio is ours/reference of the printed rates


def test_dynamic_cost_bench_runs_tiny_and_prints_ratios():
    r = _bench("bench.dynamic_cost", "--batch", "16", "--batches", "1", "--warm-batches", "1", "--reps", "1",
               "--steps", "4", "--targets", "2,4")
    assert r.returncode == 0, r.stderr[-2000:]
    ratios = [ln for ln in r.stdout.splitlines() if "ratio dynamic/standard" in ln]
    assert len(ratios) == 4 and all(float(ln.rsplit(None, 1)[1]) > 0 for ln in ratios)
    # c_t is calibrated to the targets (2 and 4 mean steps of K = 4): a stop rule that never fired
    # would leave every block at 4 steps.
    steps = [float(ln.split("mean steps")[1].split()[0]) for ln in ratios]
    assert min(steps) < 3.5 and all(0 < s <= 4 for s in steps)
    assert "on CPU there is no device/host synchronisation" in r.stdout


@pytest.mark.parametrize("argv", [["--models", "cnn4"], ["--models", "vgg:128"], ["--reps", "0"]])
def test_bench_bad_input_is_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        train_step.parse_args(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0
