"""The attack engine: constraints, the stop rule V, trajectories, and cross-checks against torchattacks."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trainer.attacks import FGSM, PGD, CWInf, TradesKL, losses
from trainer.config import RunConfig
from trainer.strategies import Dynamic

EPS = 0.1


def small_net(seed: int = 0, logit_offset: float = 0.0) -> nn.Module:
    """A fixed CNN with BatchNorm (eval mode, non-trivial running statistics) on 1x8x8 inputs."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(6 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
        net[-1].weight.mul_(4.0)
        net[-1].bias.add_(logit_offset)
    return net.eval()


def batch(n: int = 12, seed: int = 1, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=gen, dtype=dtype)
    x[:, :, :2] = 0.0  # a black border, as in MNIST: the [0,1] clip matters there
    return x, torch.randint(0, 10, (n,), generator=gen)


ALL_ATTACKS = [
    lambda: PGD(EPS, EPS / 4, 5),
    lambda: PGD(1.0, 0.25, 5, norm="l2"),
    lambda: FGSM(EPS),
    lambda: CWInf(EPS, EPS / 4, 5),
    lambda: TradesKL(EPS, EPS / 4, 5),
    lambda: PGD(EPS, EPS / 4, 5, step_noise=0.01),  # FAT's omega: noise at every step, still projected
]


@pytest.mark.parametrize("make", ALL_ATTACKS, ids=["pgd", "pgd-l2", "fgsm", "cw", "trades", "pgd-omega"])
def test_stays_in_the_ball_and_in_unit_box_and_never_modifies_the_input(make):
    attack = make()
    net, (x, y) = small_net(), batch()
    x_before = x.clone()
    res = attack(net, x, y, stop_rule=lambda k, c, lg, t, rows: c < 0.05 * (k + 1), compact=True)
    assert torch.equal(x, x_before)
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    d = (res.x_adv - x).flatten(1)
    if attack.norm == "linf":
        assert d.abs().max() <= attack.eps + 1e-6
    else:
        assert d.norm(dim=1).max() <= attack.eps + 1e-5
    assert torch.isfinite(res.fosc).all() and (res.fosc >= -1e-5).all()
    assert ((res.steps >= 0) & (res.steps <= attack.steps)).all()


def test_step_noise_is_added_at_every_step_and_zero_noise_draws_nothing():
    net, (x, y) = small_net(), batch(8)
    torch.manual_seed(3)
    plain = PGD(EPS, EPS / 4, 4, random_start=False)(net, x, y)
    after_plain = torch.rand(1)
    torch.manual_seed(3)
    noisy = PGD(EPS, EPS / 4, 4, random_start=False, step_noise=0.001)(net, x, y)
    torch.manual_seed(3)
    assert not torch.equal(plain.x_adv, noisy.x_adv)
    PGD(EPS, EPS / 4, 4, random_start=False, step_noise=0.0)(net, x, y)
    assert torch.equal(torch.rand(1), after_plain)  # omega = 0: no random draw, other strategies unchanged


def test_pgd_raises_the_loss_over_clean():
    net, (x, y) = small_net(), batch(64)
    res = PGD(EPS, EPS / 4, 10, random_start=False)(net, x, y)
    with torch.no_grad():
        clean = losses.cross_entropy(net(x), y)
        adv = losses.cross_entropy(net(res.x_adv), y)
    assert (adv >= clean - 1e-6).all() and adv.mean() > clean.mean() + 0.1
    torch.testing.assert_close(res.loss, adv, rtol=1e-5, atol=1e-5)  # reported loss is that of x_adv


def test_attacking_a_batch_equals_attacking_each_example_alone():
    net, (x, y) = small_net().double(), batch(8, dtype=torch.float64)
    attack = PGD(EPS, EPS / 4, 7, random_start=False)
    whole = attack(net, x, y)
    for i in range(len(y)):
        alone = attack(net, x[i:i + 1], y[i:i + 1])
        torch.testing.assert_close(alone.x_adv, whole.x_adv[i:i + 1], rtol=0, atol=1e-12)
        torch.testing.assert_close(alone.fosc, whole.fosc[i:i + 1], rtol=1e-6, atol=1e-7)


def _dynamic_rule(c_max: float, batch_size: int):
    strat = Dynamic(RunConfig(strategy="dynamic", c_max=c_max, t_prime=10.0))
    return strat.stop_rule(strat.plan(0), batch_size, torch.device("cpu"))


def test_dynamic_with_c_t_zero_equals_standard_pgd_bit_for_bit():
    net, (x, y) = small_net(), batch(32)
    attack = PGD(EPS, EPS / 4, 10, random_start=True)
    torch.manual_seed(123)
    standard = attack(net, x, y)
    torch.manual_seed(123)
    dynamic = attack(net, x, y, stop_rule=_dynamic_rule(0.0, len(y)), compact=True)
    assert torch.equal(dynamic.x_adv, standard.x_adv)
    assert torch.equal(dynamic.steps, standard.steps) and (standard.steps == 10).all()
    assert torch.equal(dynamic.fosc, standard.fosc)


def test_dynamic_with_huge_c_t_stops_every_example_after_its_first_step():
    net, (x, y) = small_net(), batch(16)
    attack = PGD(EPS, EPS / 4, 10, random_start=False)
    res = attack(net, x, y, stop_rule=_dynamic_rule(1e9, len(y)), compact=True, record=torch.arange(16))
    assert (res.steps == 1).all()
    one_step = PGD(EPS, EPS / 4, 1, random_start=False)(net, x, y)
    assert torch.equal(res.x_adv, one_step.x_adv)
    torch.testing.assert_close(res.fosc, one_step.fosc)  # the FOSC of x_1, where each example stopped
    assert res.trajectory["active"][2:].sum() == 0  # nobody computed or moved after step 1


def test_a_stopped_example_never_moves_again_and_its_fosc_is_the_one_at_its_stop():
    net, (x, y) = small_net().double(), batch(10, dtype=torch.float64)
    stop_at = torch.tensor([1, 2, 3, 4, 5, 6, 10, 10, 2, 3])  # iterate at which each example retires

    def rule(k, c, logits, target, rows):
        return stop_at[rows] == k
    for compact in (False, True):
        res = PGD(EPS, EPS / 4, 8, random_start=False)(net, x, y, stop_rule=rule, compact=compact)
        for i in range(len(y)):
            k = min(int(stop_at[i]), 8)
            ref = PGD(EPS, EPS / 4, k, random_start=False)(net, x[i:i + 1], y[i:i + 1])
            torch.testing.assert_close(res.x_adv[i:i + 1], ref.x_adv, rtol=0, atol=1e-12)
            torch.testing.assert_close(res.fosc[i:i + 1], ref.fosc, rtol=1e-5, atol=1e-6)
            assert int(res.steps[i]) == k


def test_trajectory_records_per_step_fosc_and_loss_ending_at_the_result():
    net, (x, y) = small_net(), batch(12)
    rec = torch.tensor([0, 5, 11])
    res = PGD(EPS, EPS / 4, 6, random_start=False)(net, x, y, record=rec, stop_rule=_dynamic_rule(0.0, 12))
    t = res.trajectory
    assert t["step"].tolist() == list(range(7)) and t["fosc"].shape == (7, 3) and t["active"].all()
    torch.testing.assert_close(t["fosc"][-1], res.fosc[rec])
    torch.testing.assert_close(t["loss"][-1], res.loss[rec])
    # x_0 = clean image (no random start): the first FOSC is eps * ||g||_1.
    g, _, _ = PGD(EPS, EPS / 4, 1).grad(net, x[rec], y[rec])
    torch.testing.assert_close(t["fosc"][0], EPS * g.abs().flatten(1).sum(1), rtol=1e-5, atol=1e-6)


def test_center_on_start_follows_the_authors_code():
    """Their random start is not clipped to [0,1] and FOSC is measured around it."""
    net, (x, y) = small_net(), batch(12)
    attack = PGD(EPS, EPS / 4, 4, random_start=True)
    torch.manual_seed(7)
    start = attack.start(x, clip=False)
    assert start.min() < 0  # black pixels plus negative noise: outside [0,1]
    torch.manual_seed(7)
    res = attack(net, x, y, record=torch.arange(12), center_on_start=True)
    g, _, _ = attack.grad(net, start, y)
    torch.testing.assert_close(res.trajectory["fosc"][0], EPS * g.abs().flatten(1).sum(1), rtol=1e-5, atol=1e-6)
    assert res.x_adv.min() >= 0 and (res.x_adv - x).abs().max() <= EPS + 1e-6
    torch.manual_seed(7)
    paper = attack(net, x, y, record=torch.arange(12))
    assert not torch.allclose(paper.trajectory["fosc"][0], res.trajectory["fosc"][0])


def test_engine_keeps_float64_and_reports_fosc_in_float32():
    net, (x, y) = small_net().double(), batch(4, dtype=torch.float64)
    for attack in (PGD(EPS, EPS / 4, 3), FGSM(EPS), CWInf(EPS, EPS / 4, 3), TradesKL(EPS, EPS / 4, 3)):
        res = attack(net, x, y)
        assert res.x_adv.dtype == torch.float64 and res.fosc.dtype == torch.float32


def _brute_force_box_fosc(x_k, g, lo, hi) -> torch.Tensor:
    """max of <v - x_k, g> over every vertex v of the box [lo, hi] (a linear function's max over a
    box is at a vertex): 2^d evaluations, for tiny inputs only."""
    d = x_k[0].numel()
    bits = torch.tensor([[(v >> i) & 1 for i in range(d)] for v in range(2 ** d)], dtype=torch.float64)
    out = []
    for xi, gi, l, h in zip(x_k.flatten(1).double(), g.flatten(1).double(), lo.flatten(1).double(), hi.flatten(1).double()):
        vertices = l + bits * (h - l)  # (2^d, d)
        out.append(((vertices - xi) * gi).sum(1).max())
    return torch.stack(out)


def test_box_fosc_and_gradient_norm_come_from_the_same_gradient_and_match_brute_force():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 10)).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(9, 1, 2, 3, generator=gen, dtype=torch.float64)
    x[:3, :, 0] = 0.0  # black pixels: the [0,1] clip cuts the ball there
    x[3:5, :, 1] = 1.0
    y = torch.randint(0, 10, (9,), generator=gen)
    eps, k = 0.2, 4
    res = PGD(eps, eps / 4, k, random_start=False)(net, x, y, record=torch.arange(9))
    lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    # An independent PGD in float64: iterates x_0..x_K, and at each the brute-force box FOSC and ||g||_1.
    xk = x.clone()
    for step in range(k + 1):
        xg = xk.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(net(xg), y, reduction="sum"), xg)
        box = _brute_force_box_fosc(xk, g, lo, hi)
        torch.testing.assert_close(res.trajectory["fosc_box"][step].double(), box, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(res.trajectory["grad_l1"][step].double(), g.abs().flatten(1).sum(1), rtol=1e-5, atol=1e-7)
        xk = torch.minimum(torch.maximum(xk + eps / 4 * g.sign(), x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(res.fosc_box.double(), box, rtol=1e-5, atol=1e-6)  # at x_K, where it ended
    assert (res.fosc_box <= res.fosc + 1e-6).all()  # the box lies inside the ball
    assert (res.fosc_box[:5] < res.fosc[:5] - 1e-4).all()  # and clipped pixels make the floor visible


def test_fosc_set_box_logs_the_box_fosc_in_both_columns_and_l2_has_none():
    net, (x, y) = small_net(), batch(6)
    res = PGD(EPS, EPS / 4, 3, fosc_set="box")(net, x, y)
    assert torch.equal(res.fosc, res.fosc_box)
    l2 = PGD(1.0, 0.25, 3, norm="l2")(net, x, y)
    assert l2.fosc_box.isnan().all() and (l2.grad_l1 > 0).all()


# ---- cross-checks against torchattacks, in float64 ----------------------------------------------
@pytest.fixture
def torchattacks():
    """Only the cross-checks need torchattacks (a test dependency); the engine tests above do not."""
    return pytest.importorskip("torchattacks", reason="the cross-checks need torchattacks (a test dependency)")


def test_pgd_and_fgsm_match_torchattacks_in_float64(torchattacks):
    net, (x, y) = small_net().double(), batch(32, dtype=torch.float64)
    ours = PGD(EPS, EPS / 4, 10, random_start=False)(net, x, y).x_adv
    ref = torchattacks.PGD(net, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    assert ours.dtype == torch.float64 and (ours - x).abs().max() > EPS / 2  # it moved
    assert (ours - ref).abs().max() < 1e-6
    ours = FGSM(EPS)(net, x, y).x_adv
    ref = torchattacks.FGSM(net, eps=EPS)(x, y)
    assert (ours - ref).abs().max() < 1e-6


def test_cw_inf_matches_torchattacks_upgd_margin_in_float64(torchattacks):
    """What is compared: our CWInf (kappa=0, no random start) and torchattacks.UPGD(loss='margin',
    decay=0, random_start=False), 30 steps of eps/4. UPGD's margin takes the max over
    (1-onehot)*logits, i.e. with the true logit replaced by 0 (ours: excluded), and divides the
    gradient by its mean |.| (NaN for an all-zero gradient, i.e. once an example is misclassified).
    So: the net's logits are all positive (offset +20), which makes both maxes the max over the other
    logits; the labels are the clean predictions; and the comparison is on the examples that our
    attack leaves correctly classified at the end (a misclassified example has a zero gradient and
    never moves again, so these were correct at every step: no all-zero gradient, no NaN, asserted).
    A positive rescaling of the
    gradient does not change its sign, so on these examples both attacks take the same steps."""
    net = small_net(seed=3, logit_offset=20.0).double()
    x, _ = batch(48, seed=4, dtype=torch.float64)
    with torch.no_grad():
        logits = net(x)
    assert logits.min() > 0
    y = logits.argmax(1)
    eps = 0.03
    cw = CWInf(eps, eps / 4, 30, random_start=False, kappa=0.0)
    with torch.no_grad():
        keep = losses.cw_margin(net(cw(net, x, y).x_adv), y, 0.0) < 0
    assert keep.sum() >= 12
    x, y = x[keep], y[keep]
    ours = cw(net, x, y).x_adv
    ref = torchattacks.UPGD(net, eps=eps, alpha=eps / 4, steps=30, random_start=False, loss="margin", decay=0.0)(x, y)
    assert not torch.isnan(ref).any()
    assert (ours - ref).abs().max() < 1e-6
    with torch.no_grad():
        before, after = losses.cw_margin(net(x), y, 0.0), losses.cw_margin(net(ours), y, 0.0)
    assert (after > before + 1e-3).all()  # the margin shrank for every compared example: the attack did work
