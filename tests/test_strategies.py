"""Strategies: what each asks of the attack and the loss, checked unit by unit and in tiny real runs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import store
from store.schedule import c_t as schedule_c_t
from trainer import checkpoint, data, run
from trainer.attacks import FGSM, PGD
from trainer.config import PRESETS, ConfigError, RunConfig, from_preset
from trainer.loop import build_attack
from trainer.models import build_model
from trainer.strategies import Curriculum, CurriculumFixed, Dynamic, Fat, FgsmPgd, build_strategy

# Tiny real runs: 48 offline MNIST digits in 3 batches of 16, PGD-2, no end-of-run evaluation.
N_TRAIN, BATCH, HELDOUT = 48, 16, 16


def tiny(runs_dir: Path, name: str, strategy: str, epochs: int = 1, *extra: str) -> Path:
    argv = ["--preset", "quick", "--strategy", strategy, "--name", name, "--runs-dir", str(runs_dir),
            "--epochs", str(epochs), "--n-train", str(N_TRAIN), "--batch-size", str(BATCH), "--heldout", str(HELDOUT),
            "--heldout-pgd-steps", "1", "--steps", "2", "--trajectory-examples", "4", "--no-eval-at-end", "--quiet",
            *extra]
    assert run.main(argv) == 0
    return runs_dir / name


def examples(runs_dir: Path, name: str):
    with store.open(runs_dir) as con:
        return con.query_df("SELECT epoch, batch, idx, fosc, loss, steps, correct, c_t FROM examples "
                            "WHERE run = ? ORDER BY epoch, idx", [name])


def final_weights(run_dir: Path) -> dict:
    return checkpoint.load(checkpoint.path(run_dir))["model"]


def initial_cnn4(seed: int = 0) -> nn.Module:
    """The run's initial model: setup() seeds torch with cfg.seed right before building it."""
    torch.manual_seed(seed)
    return build_model("cnn4", 1, 10, 28).eval()


def per_example_grad(model, x, y):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y, reduction="sum"), x)
    return g


def train_data():
    ds, _ = data.load_dataset("mnist-demo", None, torch.device("cpu"), heldout=HELDOUT, n_train=N_TRAIN)
    return ds


# ---- schedules and plans ------------------------------------------------------------------------
def test_dynamic_c_t_schedule():
    strat = Dynamic(RunConfig(strategy="dynamic", c_max=0.5, t_prime=40.0))
    got = [strat.plan(e).c_t for e in (0, 10, 20, 39, 40, 45)]
    assert got == pytest.approx([0.5, 0.375, 0.25, 0.0125, 0.0, 0.0])
    assert all(strat.plan(e).steps == 10 and strat.plan(e).attack == "pgd" for e in (0, 45))
    assert schedule_c_t(10, 0.5, 40.0) == pytest.approx(0.375)
    strat.state.update(c_max=0.2, t_prime=2.0)  # what the control file changes
    assert strat.plan(1).c_t == pytest.approx(0.1)


def test_curriculum_watches_heldout_pgd_k_advances_on_plateau_and_rolls_back_to_the_lesson_best():
    cur = Curriculum(RunConfig(strategy="curriculum", steps=2, curriculum_patience=2))
    assert cur.plan(0).attack is None and cur.plan(0).steps == 0  # k = 0: clean examples
    # Scripted held-out accuracy against PGD-k, by epoch; weights() returns a tag of the epoch's weights.
    script = [0.5, 0.6, 0.6, 0.59, 0.3, 0.4, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5]
    asked, ks, rollbacks = [], [], {}
    for epoch, acc in enumerate(script):
        def heldout(k, acc=acc):
            asked.append(k)
            return acc
        back = cur.end_epoch(epoch, heldout, lambda epoch=epoch: {"epoch": epoch})
        if back is not None:
            rollbacks[epoch] = back["epoch"]
        ks.append(cur.k(epoch + 1))
    # lesson 0: best 0.6 at epoch 1, no gain at epochs 2, 3 -> roll back to epoch 1's weights, k = 1;
    # lesson 1: 0.3, best 0.4 at epoch 5, none at 6, 7 -> back to epoch 5, k = 2 = K; then it stays, unmeasured.
    assert ks == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert rollbacks == {3: 1, 7: 5}
    assert asked == [0, 0, 0, 0, 1, 1, 1, 1]  # PGD-k of the lesson being trained, only while k < K
    assert cur.plan(99).attack == "pgd" and cur.plan(99).steps == 2
    restored = Curriculum(cur.cfg)
    restored.load_state_dict(cur.state_dict())
    assert restored.k(0) == 2


def test_curriculum_batch_mixing_gives_pgd_0_to_k_across_the_batch():
    cur = Curriculum(RunConfig(strategy="curriculum", steps=3, curriculum_mixing=True))
    cur.state["k"] = 2
    plan = cur.plan(0)
    assert plan.mix and plan.steps == 2
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    x, y = torch.rand(9, 1, 8, 8), torch.randint(0, 10, (9,))
    res = PGD(0.3, 0.075, plan.steps)(net, x, y, stop_rule=cur.stop_rule(plan, 9, "cpu"), compact=True)
    assert res.steps.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_curriculum_fixed_is_its_own_strategy_with_a_schedule_by_epoch():
    cur = build_strategy(RunConfig(strategy="curriculum-fixed", steps=3, t_prime=8.0))
    assert isinstance(cur, CurriculumFixed) and cur.name == "curriculum-fixed"
    assert [cur.k(e) for e in range(10)] == [0, 0, 1, 1, 2, 2, 3, 3, 3, 3]  # T'/(K+1) = 2 epochs per k
    assert cur.end_epoch(0, lambda k: pytest.fail("no held-out measurement"), dict) is None
    legacy = build_strategy(RunConfig(strategy="curriculum", curriculum_mode="fixed"))  # a config saved before
    assert isinstance(legacy, CurriculumFixed)
    with pytest.raises(ConfigError, match="heldout"):
        RunConfig(strategy="curriculum", heldout=0).validate()


def test_fgsm_pgd_switches_at_fgsm_epochs():
    cfg = RunConfig(strategy="fgsm-pgd", fgsm_epochs=3, steps=7)
    strat = FgsmPgd(cfg)
    plans = [(strat.plan(e).attack, strat.plan(e).steps) for e in range(5)]
    assert plans == [("fgsm", 1)] * 3 + [("pgd", 7)] * 2
    fgsm = build_attack("fgsm", cfg, 1)
    assert isinstance(fgsm, FGSM) and fgsm.alpha == cfg.eps and fgsm.steps == 1 and not fgsm.random_start
    pgd = build_attack("pgd", cfg, 7)
    assert isinstance(pgd, PGD) and pgd.alpha == pytest.approx(cfg.eps / 4) and pgd.random_start


def test_fat_tau_by_epoch_and_stop_rule_counts_steps_after_first_misclassification():
    fat = Fat(RunConfig(strategy="fat", fat_tau_epochs=(2, 4)))
    assert [fat.tau(e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    # Three examples, tau = 1. Predictions per iterate k (True = misclassified):
    wrong = torch.tensor([[1, 1, 1, 1],    # wrong from x_0: one more step, stops at k = 1
                          [0, 0, 1, 1],    # first wrong at k = 2: one more step, stops at k = 3
                          [0, 0, 0, 0]]).bool()  # never wrong: never stops
    rule = fat.stop_rule(fat.plan(2), 3, torch.device("cpu"))
    y = torch.zeros(3, dtype=torch.long)
    stops = []
    for k in range(4):
        logits = torch.zeros(3, 10)
        logits[:, 0] = 1.0
        logits[wrong[:, k], 0], logits[wrong[:, k], 1] = 0.0, 1.0
        stops.append(rule(k, torch.ones(3), logits, y, torch.arange(3)).tolist())
    assert [s.index(True) if True in s else None for s in zip(*stops)] == [1, 3, None]


def test_fat_in_the_engine_gives_tau_steps_after_the_first_misclassified_iterate():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)).double().eval()
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(64, 1, 8, 8, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        y = net(x).argmax(1)  # all correct at x_0
    eps, K = 0.3, 6
    # The unstopped PGD path: which iterates x_0..x_K are misclassified.
    with torch.no_grad():
        wrong = torch.stack([net(PGD(eps, eps / 4, k, random_start=False)(net, x, y).x_adv).argmax(1) != y
                             if k else torch.zeros(64, dtype=torch.bool) for k in range(K + 1)], 1)
    first = torch.where(wrong.any(1), wrong.float().argmax(1), torch.full((64,), K + 1))
    stays_wrong = torch.tensor([bool(wrong[i, first[i]:].all()) for i in range(64)])
    for tau in (0, 1, 2):
        fat = Fat(RunConfig(strategy="fat", fat_tau_epochs=(1, 2), steps=K))
        res = PGD(eps, eps / 4, K, random_start=False)(net, x, y, stop_rule=fat.stop_rule(fat.plan(tau), 64, "cpu"),
                                                       compact=True)
        expect = torch.clamp(first + tau, max=K)
        sel = stays_wrong | (first > K)
        assert sel.sum() > 32 and ((first <= K) & sel).sum() > 8
        assert torch.equal(res.steps[sel].long(), expect[sel])


def test_trades_inner_max_and_loss():
    cfg = RunConfig(strategy="trades", eps=0.3, steps=3)
    strat = build_strategy(cfg)
    assert strat.plan(0).attack == "trades"
    model = initial_cnn4()
    ds = train_data()
    x, y = ds.x_train[:8], ds.y_train[:8]
    res = build_attack("trades", cfg, 3)(model, x, y)
    with torch.no_grad():
        p_clean = torch.softmax(model(x), 1)
        kl = (p_clean * (p_clean.log() - torch.log_softmax(model(res.x_adv), 1))).sum(1)
    torch.testing.assert_close(res.loss, kl, rtol=1e-4, atol=1e-6)  # the attack maximised KL(p(x0) || p(x))
    assert (kl > 1e-6).all()
    model.train()
    loss, _ = strat.train_loss(model, x, res.x_adv, y, 0)
    ce = nn.functional.cross_entropy(model(x), y, reduction="none")
    kl_train = nn.functional.kl_div(torch.log_softmax(model(res.x_adv), 1), torch.softmax(model(x), 1),
                                    reduction="none").sum(1)
    torch.testing.assert_close(loss, ce + 6.0 * kl_train)


def test_official_code_compat_weights_the_loss_from_epoch_1_and_needs_dynamic():
    ds = train_data()
    x, y = ds.x_train[:8], ds.y_train[:8]
    x_adv = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    compat = Dynamic(RunConfig(strategy="dynamic", official_code_compat=True))
    paper = Dynamic(RunConfig(strategy="dynamic"))
    fresh = initial_cnn4  # each call on a fresh model: a train-mode forward moves BN's running statistics
    ce = nn.functional.cross_entropy(fresh().train()(x_adv), y, reduction="none")
    with torch.no_grad():  # Keras' model.predict: inference mode, before the update
        w = nn.functional.cross_entropy(fresh()(x_adv), y, reduction="none")
    torch.testing.assert_close(paper.train_loss(fresh().train(), x, x_adv, y, 1)[0], ce)
    torch.testing.assert_close(compat.train_loss(fresh().train(), x, x_adv, y, 0)[0], ce)  # epoch 0: unweighted
    model = fresh().train()
    weighted = compat.train_loss(model, x, x_adv, y, 1)[0]
    torch.testing.assert_close(weighted, w * ce)  # weight = own adversarial CE, not normalised
    assert model.training and not torch.allclose(weighted, ce)
    with pytest.raises(ConfigError, match="dynamic"):
        RunConfig(strategy="standard", official_code_compat=True).validate()


def test_presets_match_section_5_1():
    mnist, cifar = from_preset("paper-mnist"), from_preset("paper-cifar10")
    for cfg in (mnist, cifar):
        assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.lr_gamma) == (0.01, 0.9, 1e-4, 0.1)
        assert (cfg.steps, cfg.random_start, cfg.c_max, cfg.norm) == (10, True, 0.5, "linf")
        assert cfg.step_size == pytest.approx(cfg.eps / 4)
    assert (mnist.dataset, mnist.model, mnist.eps, mnist.epochs, mnist.milestones, mnist.t_prime) == \
        ("mnist", "cnn4", 0.3, 50, (20, 40), 40.0)
    assert (cifar.dataset, cifar.model, cifar.eps, cifar.epochs, cifar.milestones, cifar.t_prime) == \
        ("cifar10", "cnn8", 8 / 255, 120, (60, 100), 100.0)
    assert cifar.fgsm_epochs == 20  # §3.2: "replace the first 20 epochs of PGD ... with FGSM"
    fat = Fat(cifar)  # the FAT code calls adjust_tau(epoch + 1): tau 0 for 0-based epochs <= 49, 1 for <= 89
    assert [fat.tau(e) for e in (49, 50, 89, 90)] == [0, 1, 1, 2]
    assert fat.plan(0).step_noise == 0.001  # the FAT code's omega, at every step
    trades = from_preset("trades-mnist")  # the TRADES code's MNIST settings
    assert (trades.strategy, trades.trades_beta, trades.steps, trades.step_size, trades.eps) == ("trades", 1.0, 40, 0.01, 0.3)
    assert from_preset("paper-mnist", eps=0.1, t_prime=30.0).eps == 0.1  # every value overridable
    assert set(PRESETS) == {"paper-mnist", "paper-cifar10", "trades-mnist", "quick"}


# ---- tiny real runs -----------------------------------------------------------------------------
def test_dynamic_with_c_max_zero_trains_exactly_like_standard(tmp_path):
    tiny(tmp_path, "dyn0", "dynamic", 2, "--c-max", "0")
    tiny(tmp_path, "std", "standard", 2)
    a, b = final_weights(tmp_path / "dyn0"), final_weights(tmp_path / "std")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = examples(tmp_path, "dyn0"), examples(tmp_path, "std")
    cols = ["epoch", "batch", "idx", "fosc", "loss", "steps", "correct"]
    assert len(ea) == 2 * N_TRAIN and ea[cols].equals(eb[cols])
    assert (ea["c_t"] == 0).all() and eb["c_t"].isna().all()


def test_unsecured_logs_the_fosc_of_the_clean_example(tmp_path):
    tiny(tmp_path, "clean", "unsecured", 1, "--n-train", str(BATCH))  # one batch: the initial model
    rows = examples(tmp_path, "clean")
    assert len(rows) == BATCH and (rows["steps"] == 0).all() and rows["c_t"].isna().all()
    ds, _ = data.load_dataset("mnist-demo", None, torch.device("cpu"), heldout=HELDOUT, n_train=BATCH)
    pos = {int(i): p for p, i in enumerate(ds.train_ids)}
    ids = torch.tensor([pos[int(i)] for i in rows["idx"]])
    g = per_example_grad(initial_cnn4(), ds.x_train[ids], ds.y_train[ids])
    expect = 0.3 * g.abs().flatten(1).sum(1)  # eps * ||g||_1: FOSC at x_k = x_0
    torch.testing.assert_close(torch.tensor(rows["fosc"].to_numpy()), expect, rtol=1e-4, atol=1e-6)


def test_box_fosc_gradient_norm_and_p_true_columns_equal_an_independent_computation(tmp_path):
    """One batch, the initial model, no random start: every logged value can be recomputed here."""
    tiny(tmp_path, "std", "standard", 1, "--n-train", str(BATCH), "--no-random-start")
    with store.open(tmp_path) as con:
        rows = con.query_df("SELECT idx, fosc, fosc_box, grad_l1, p_true, correct FROM examples ORDER BY idx")
        traj = con.query_df("SELECT idx, fosc, fosc_box, grad_l1 FROM steps WHERE step = 0 ORDER BY idx")
    ds = data.load_dataset("mnist-demo", None, torch.device("cpu"), heldout=HELDOUT, n_train=BATCH)[0]
    pos = {int(i): p for p, i in enumerate(ds.train_ids)}
    eps, model = 0.3, initial_cnn4()
    # steps rows at k = 0 are at x_0 with the initial (eval-mode) model: ||g||_1 and the box FOSC per pixel.
    ids = torch.tensor([pos[int(i)] for i in traj["idx"]])
    x0, y = ds.x_train[ids].double(), ds.y_train[ids]
    g = per_example_grad(model.double(), x0, y)
    lo, hi = (x0 - eps).clamp(0, 1), (x0 + eps).clamp(0, 1)
    box = torch.where(g > 0, (hi - x0) * g, (lo - x0) * g).flatten(1).sum(1)
    assert len(traj) == 4
    torch.testing.assert_close(torch.tensor(traj["grad_l1"].to_numpy()).double(), g.abs().flatten(1).sum(1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(torch.tensor(traj["fosc_box"].to_numpy()).double(), box, rtol=1e-4, atol=1e-6)
    assert (traj["fosc_box"] < traj["fosc"]).all()  # black MNIST pixels: part of the ball is out of [0,1]
    # p_true: the one update's train-mode forward on x_adv, which is PGD-2 of the initial model.
    ids = torch.tensor([pos[int(i)] for i in rows["idx"]])
    x0, y = ds.x_train[ids], ds.y_train[ids]
    attack = PGD(eps, eps / 4, 2, random_start=False)
    x_adv = attack(initial_cnn4(), x0, y).x_adv
    with torch.no_grad():
        logits = initial_cnn4().train()(x_adv)
    p = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(rows["p_true"].to_numpy()), p, rtol=1e-4, atol=1e-5)
    assert rows["correct"].tolist() == (logits.argmax(1) == y).tolist()  # the same logits
    assert rows["grad_l1"].gt(0).all() and rows["fosc_box"].le(rows["fosc"] + 1e-5).all()


def test_c_max_auto_is_the_mean_fgsm_fosc_and_is_logged(tmp_path):
    tiny(tmp_path, "auto", "dynamic", 1, "--c-max", "auto", "--c-max-batches", "2", "--c-max-auto-at", "start")
    with store.open(tmp_path) as con:
        ev = con.query_df("SELECT detail FROM events WHERE run = 'auto' AND kind = 'c_max_auto'")
        ep = con.query_df("SELECT c_max, c_t FROM epochs WHERE run = 'auto'")
    assert len(ev) == 1
    logged = float(ev["detail"][0])
    # Independently: FGSM from x_0 on the first 2 batches of epoch 0, FOSC at x_1 with the initial model.
    ds = train_data()
    ids = data.epoch_order(N_TRAIN, 0, 0, "cpu")[:2 * BATCH]
    model, eps = initial_cnn4(), 0.3
    x0, y = ds.x_train[ids], ds.y_train[ids]
    x1 = (x0 + eps * per_example_grad(model, x0, y).sign()).clamp(0, 1)
    g1 = per_example_grad(model, x1, y)
    fosc = eps * g1.abs().flatten(1).sum(1) - ((x1 - x0) * g1).flatten(1).sum(1)
    assert logged == pytest.approx(float(fosc.mean()), rel=1e-4)
    assert ep["c_max"][0] == pytest.approx(logged, rel=1e-5) and ep["c_t"][0] == pytest.approx(logged, rel=1e-5)


def test_c_max_auto_after_warm_up_is_estimated_on_the_model_trained_for_one_epoch(tmp_path):
    rd = tiny(tmp_path, "warm", "dynamic", 2, "--c-max", "auto", "--c-max-batches", "2")
    with store.open(tmp_path) as con:
        ev = con.query_df("SELECT epoch, detail FROM events WHERE run = 'warm' AND kind = 'c_max_auto'")
        ep = con.query_df("SELECT epoch, c_max, c_t FROM epochs WHERE run = 'warm' ORDER BY epoch")
        steps = con.query_df("SELECT epoch, max(steps) AS k FROM examples WHERE run = 'warm' GROUP BY epoch ORDER BY epoch")
    assert ev["epoch"].tolist() == [0]  # made at the end of epoch 0, once
    logged = float(ev["detail"][0])
    assert math.isinf(ep["c_t"][0]) and steps["k"].tolist()[0] == 1  # warm-up: one PGD step per example
    # Independently: FGSM FOSC on the first 2 batches with the weights after epoch 0, taken from a
    # 1-epoch copy of the run (epoch 0 does not depend on the number of epochs).
    tiny(tmp_path, "warm1", "dynamic", 1, "--c-max", "auto", "--c-max-batches", "2")
    model = initial_cnn4()
    model.load_state_dict(final_weights(tmp_path / "warm1"))
    model.eval()
    ds = train_data()
    ids = data.epoch_order(N_TRAIN, 0, 0, "cpu")[:2 * BATCH]
    eps, x0, y = 0.3, ds.x_train[ids], ds.y_train[ids]
    x1 = (x0 + eps * per_example_grad(model, x0, y).sign()).clamp(0, 1)
    g1 = per_example_grad(model, x1, y)
    fosc = eps * g1.abs().flatten(1).sum(1) - ((x1 - x0) * g1).flatten(1).sum(1)
    assert logged == pytest.approx(float(fosc.mean()), rel=1e-4)
    assert ep["c_max"].tolist() == pytest.approx([logged, logged], rel=1e-5)
    assert ep["c_t"][1] == pytest.approx(schedule_c_t(1, logged, 4.0), rel=1e-5)  # the quick preset's T' = 4
    assert RunConfig.from_json((rd / "config.json").read_text()).c_max_auto_at == "warmup"  # which was used


def test_official_code_compat_run_differs_from_the_paper_run(tmp_path):
    tiny(tmp_path, "paper", "dynamic", 2)
    tiny(tmp_path, "compat", "dynamic", 2, "--official-code-compat")
    a, b = final_weights(tmp_path / "paper"), final_weights(tmp_path / "compat")
    assert not all(torch.equal(a[k], b[k]) for k in a)
    ea, eb = examples(tmp_path, "paper"), examples(tmp_path, "compat")
    assert not ea["fosc"].equals(eb["fosc"])
    assert (ea["fosc"] >= -1e-5).all()  # centred on x_0, FOSC >= 0; centred on the start it need not be


@pytest.mark.parametrize("strategy, epochs, extra", [
    ("trades", 1, ()), ("fat", 1, ()), ("fgsm-pgd", 1, ("--fgsm-epochs", "0")),
    ("curriculum-fixed", 2, ("--t-prime", "1")),  # k = 0 (clean), then k = K
    ("curriculum", 3, ("--curriculum-patience", "1", "--curriculum-mixing")),
    ("dynamic", 1, ("--norm", "l2", "--eps", "1.5")),
], ids=["trades", "fat", "fgsm-pgd", "curriculum-fixed", "curriculum", "dynamic-l2"])
def test_every_strategy_runs_and_logs_fosc(tmp_path, strategy, epochs, extra):
    tiny(tmp_path, "r", strategy, epochs, *extra)
    rows = examples(tmp_path, "r")
    assert len(rows) == epochs * N_TRAIN and not rows[["epoch", "idx"]].duplicated().any()
    assert rows["fosc"].notna().all() and (rows["fosc"] >= -1e-4).all() and rows["loss"].map(math.isfinite).all()
    assert ((rows["steps"] >= 0) & (rows["steps"] <= 2)).all()
    last = rows[rows["epoch"] == epochs - 1]
    if strategy in ("trades", "curriculum-fixed", "fgsm-pgd"):
        assert (last["steps"] == 2).all()
    if strategy == "curriculum-fixed":
        assert (rows[rows["epoch"] == 0]["steps"] == 0).all()


def test_one_strategy_registry_read_by_every_layer():
    from dashboard import jobs
    from store import strategies as registry
    from trainer import reproduce
    from trainer.strategies import STRATEGIES

    names = registry.NAMES
    assert set(STRATEGIES) == set(names) and jobs.STRATEGIES == names
    assert run.build_parser().parse_args(["--strategy", names[-1]]).strategy == names[-1]
    for name in names:
        assert type(build_strategy(RunConfig(strategy=name).validate())).name == name
        assert registry.label({"strategy": name}) == name
    with pytest.raises(ConfigError, match="choose one of: " + ", ".join(names)):
        RunConfig(strategy="nope").validate()
    assert reproduce.parse(["--table", "mnist-tiny", "--strategies", ",".join(names)])[2] == names


def test_fast_is_fgsm_from_a_random_start_with_step_one_and_a_quarter_eps(tmp_path):
    cfg = RunConfig(strategy="fast", eps=0.3).validate()
    fast = build_strategy(cfg)
    plan = fast.plan(0)
    attack = fast.attack(plan)
    assert (plan.attack, plan.steps, attack.steps, attack.alpha, attack.random_start) == ("pgd", 1, 1, 0.375, True)
    # Independently (Wong et al.'s recipe): delta ~ U(-eps, eps) clipped to the box, one signed step, projected.
    model, ds = initial_cnn4(), train_data()
    x, y = ds.x_train[:16], ds.y_train[:16]
    torch.manual_seed(5)
    ours = attack(model, x, y).x_adv
    torch.manual_seed(5)
    start = (x + torch.empty_like(x).uniform_(-0.3, 0.3)).clamp(0, 1)
    step = start + 0.375 * per_example_grad(model, start, y).sign()
    expect = torch.min(torch.max(step, x - 0.3), x + 0.3).clamp(0, 1)
    torch.testing.assert_close(ours, expect, rtol=0, atol=1e-6)
    tiny(tmp_path, "fast", "fast", 1)  # a real run logs FOSC like the rest
    rows = examples(tmp_path, "fast")
    assert len(rows) == N_TRAIN and (rows["steps"] == 1).all() and rows["fosc"].notna().all()


def test_mart_loss_equals_the_authors_formula_and_a_real_run_logs_fosc(tmp_path):
    cfg = RunConfig(strategy="mart", eps=0.3, steps=3).validate()
    mart = build_strategy(cfg)
    assert cfg.trades_beta == 6.0 and mart.plan(0).attack == "pgd"
    model, ds = initial_cnn4(), train_data()
    x, y = ds.x_train[:16], ds.y_train[:16]
    torch.manual_seed(2)
    x_adv = mart.attack(mart.plan(0))(model, x, y).x_adv
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and not torch.equal(x_adv, x)
    model.train()
    torch.manual_seed(0)
    loss, logits = mart.train_loss(model, x, x_adv, y, 0)
    # The authors' batch loss (mart.py), written out: the mean of ours must equal it.
    m = initial_cnn4().train()
    nat, adv = m(x), m(x_adv)
    adv_probs, nat_probs = torch.softmax(adv, 1), torch.softmax(nat, 1)
    tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
    new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
    loss_adv = nn.functional.cross_entropy(adv, y) + nn.functional.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
    true_probs = torch.gather(nat_probs, 1, y.unsqueeze(1)).squeeze()
    kl = nn.KLDivLoss(reduction="none")(torch.log(adv_probs + 1e-12), nat_probs).sum(1)
    expect = loss_adv + 6.0 * (1.0 / len(y)) * torch.sum(kl * (1.0000001 - true_probs))
    torch.testing.assert_close(loss.mean(), expect, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, adv)  # p_true and correct come from the adversarial logits
    tiny(tmp_path, "mart", "mart", 1)
    rows = examples(tmp_path, "mart")
    assert len(rows) == N_TRAIN and (rows["steps"] == 2).all() and rows["fosc"].notna().all()
