"""FOSC (paper Eq. 4) against its definition, computed independently of trainer.fosc's closed forms."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

from trainer import fosc
from trainer.attacks import PGD


def _vertices(x0: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """Every corner of the box [lo, hi] (x0: (d,)), as rows: a linear function's max is at one of them."""
    d = x0.numel()
    corners = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=x0.dtype)
    return lo + corners * (hi - lo)


def _brute_max(x_k: torch.Tensor, g: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """max over the box of <x - x_k, g>, by enumerating corners, one example at a time."""
    return torch.stack([(_vertices(x_k[i], lo[i], hi[i]) - x_k[i]).mul(g[i]).sum(1).max() for i in range(len(g))])


def _case(b=16, d=8, eps=0.2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.rand(b, d, generator=gen, dtype=torch.float64)
    x0[:, 0], x0[:, 1] = 0.0, 1.0  # pixels on the [0,1] border, where ball and box differ
    x_k = x0 + eps * (2 * torch.rand(b, d, generator=gen, dtype=torch.float64) - 1)
    g = torch.randn(b, d, generator=gen, dtype=torch.float64)
    return x0, x_k, g, eps


def test_linf_equals_the_max_over_the_ball_coordinatewise_and_by_enumeration():
    x0, x_k, g, eps = _case()
    c = fosc.fosc_linf(x_k, x0, g, eps)
    # Coordinate-wise: each coordinate takes the better end of [x0 - eps, x0 + eps].
    coordwise = torch.maximum((x0 + eps - x_k) * g, (x0 - eps - x_k) * g).sum(1)
    brute = _brute_max(x_k, g, x0 - eps, x0 + eps)
    assert c.dtype == torch.float32
    torch.testing.assert_close(c.double(), coordwise, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c.double(), brute, rtol=1e-5, atol=1e-5)
    assert (c >= 0).all()


def test_linf_is_zero_at_the_boundary_maximiser_and_positive_inside():
    x0, _, g, eps = _case(seed=1)
    at_max = x0 + eps * g.sign()  # x_k - x_0 = eps * sign(g): a local maximum on the ball's surface
    assert fosc.fosc_linf(at_max, x0, g, eps).abs().max() < 1e-5
    assert (fosc.fosc_linf(x0, x0, g, eps) - eps * g.abs().sum(1)).abs().max() < 1e-4  # x_k = x_0
    inside = x0 + 0.5 * eps * g.sign()
    assert (fosc.fosc_linf(inside, x0, g, eps) > 0.1).all()


def test_l2_matches_the_closed_form_maximiser_and_bounds_random_points():
    x0, _, g, eps = _case(seed=2)
    gen = torch.Generator().manual_seed(3)
    d = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    x_k = x0 + 0.7 * eps * d / d.norm(dim=1, keepdim=True)  # inside the L2 ball
    c = fosc.fosc_l2(x_k, x0, g, eps)
    x_star = x0 + eps * g / g.norm(dim=1, keepdim=True)  # the maximiser of <x, g> over the L2 ball
    torch.testing.assert_close(c.double(), ((x_star - x_k) * g).sum(1), rtol=1e-5, atol=1e-5)
    # No point of the ball does better than the maximiser.
    u = torch.randn(512, x0.shape[1], generator=gen, dtype=torch.float64)
    u = u / u.norm(dim=1, keepdim=True)
    for i in range(len(g)):
        others = ((x0[i] + eps * u - x_k[i]) * g[i]).sum(1)
        assert others.max() <= c[i].double() + 1e-5
    assert fosc.fosc_l2(x_star, x0, g, eps).abs().max() < 1e-5
    assert (c >= 0).all()


def test_box_equals_brute_force_over_ball_intersected_with_unit_box():
    x0, x_k, g, eps = _case(seed=4)
    lo, hi = (x0 - eps).clamp(min=0), (x0 + eps).clamp(max=1)
    got_lo, got_hi = fosc.box_bounds(x0, eps)
    assert torch.equal(got_lo, lo) and torch.equal(got_hi, hi)
    x_k = torch.minimum(torch.maximum(x_k, lo), hi)  # an iterate of projected PGD lies in the box
    c = fosc.fosc_box(x_k, g, lo, hi)
    torch.testing.assert_close(c.double(), _brute_max(x_k, g, lo, hi), rtol=1e-5, atol=1e-5)
    assert (c >= 0).all()
    # The box is inside the ball: its FOSC can only be smaller, and is strictly so on border pixels.
    ball = fosc.fosc_linf(x_k, x0, g, eps)
    assert (c <= ball + 1e-6).all() and (c < ball - 1e-3).any()
    torch.testing.assert_close(fosc.fosc(x_k, x0, g, eps, feasible_set="box"), c)
    torch.testing.assert_close(fosc.fosc(x_k, x0, g, eps, norm="l2"), fosc.fosc_l2(x_k, x0, g, eps))
    with pytest.raises(ValueError):
        fosc.fosc(x_k, x0, g, eps, norm="l1")


def _net(seed=0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    with torch.no_grad():  # non-trivial running statistics, so eval-mode BN is not the identity
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 2.0)
    return net.eval()


def test_attack_fosc_uses_per_example_gradients_in_float32():
    net = _net().double()
    gen = torch.Generator().manual_seed(5)
    x0 = torch.rand(6, 1, 8, 8, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 10, (6,), generator=gen)
    eps = 0.1
    attack = PGD(eps, eps / 4, 3, random_start=False)
    g_batch, _, _ = attack.grad(net, x0, y)  # the engine's gradient: of the batch's summed loss
    for i in range(len(y)):
        xi = x0[i:i + 1].clone().requires_grad_(True)
        (gi,) = torch.autograd.grad(nn.functional.cross_entropy(net(xi), y[i:i + 1]), xi)
        torch.testing.assert_close(g_batch[i:i + 1], gi, rtol=1e-10, atol=1e-12)
    res = attack(net, x0, y)
    assert res.fosc.dtype == torch.float32 and res.x_adv.dtype == torch.float64
    # The reported FOSC is that of x_adv, from the per-example gradient at x_adv (not a batch mean).
    g_adv, _, _ = attack.grad(net, res.x_adv, y)
    expect = eps * g_adv.abs().flatten(1).sum(1) - ((res.x_adv - x0) * g_adv).flatten(1).sum(1)
    torch.testing.assert_close(res.fosc.double(), expect, rtol=1e-5, atol=1e-6)
    mean_reduced = fosc.fosc_linf(res.x_adv, x0, g_adv / len(y), eps)
    assert not torch.allclose(res.fosc, mean_reduced)


def test_fosc_is_float32_whatever_the_input_precision():
    x0, x_k, g, eps = _case(seed=6)
    for dt in (torch.float64, torch.bfloat16, torch.float16):
        out = fosc.fosc_linf(x_k.to(dt), x0.to(dt), g.to(dt), eps)
        assert out.dtype == torch.float32
    net = _net()
    x = torch.rand(4, 1, 8, 8)
    res = PGD(0.1, 0.025, 2, bf16=True)(net, x, torch.arange(4))
    assert res.fosc.dtype == torch.float32 and res.x_adv.dtype == torch.float32


# ---- gradient masking: FOSC ~ 0 because the gradient vanishes ------------------------------------
def _mlp(saturate: bool) -> nn.Module:
    torch.manual_seed(4)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    if saturate:
        with torch.no_grad():
            net[-1].weight.mul_(10.0)
            net[-1].bias[3] += 1e3  # class 3 wins everywhere by a huge margin: a saturated softmax
    return net.eval()


def test_masking_flags_a_saturated_softmax_and_not_a_normal_model():
    import duckdb
    import pandas as pd

    from store import masking

    gen = torch.Generator().manual_seed(5)
    x = torch.rand(64, 1, 4, 4, generator=gen)
    measured = {}
    for kind in ("saturated", "normal"):
        net = _mlp(kind == "saturated")
        with torch.no_grad():
            y = net(x).argmax(1)  # correctly classified: the saturated softmax has p_true = 1, g = 0
        res = PGD(0.1, 0.025, 5, random_start=False)(net, x, y)
        measured[kind] = pd.DataFrame({"fosc": res.fosc.numpy(), "grad_l1": res.grad_l1.numpy()})
    sat, normal = measured["saturated"], measured["normal"]
    assert (sat["fosc"] <= masking.FOSC_ZERO).all()  # reads as perfectly converged ...
    assert masking.is_masked(sat["fosc"], sat["grad_l1"]).all()  # ... and is flagged as masking
    assert not masking.is_masked(normal["fosc"], normal["grad_l1"]).any()
    assert (normal["grad_l1"] > 1e-3).all()
    # The SQL form is the same rule.
    con = duckdb.connect()
    con.register("measured", pd.concat([sat.assign(kind="saturated"), normal.assign(kind="normal")]))
    got = con.execute(f"SELECT kind, avg(CAST({masking.masked_sql()} AS DOUBLE)) AS share FROM measured "
                      "GROUP BY kind ORDER BY kind").fetchall()
    assert got == [("normal", 0.0), ("saturated", 1.0)]
    assert not masking.is_masked(float("nan"), 0.0)  # a retired step row is never masked
    with pytest.raises(ValueError):
        masking.masked_sql("fosc; DROP", "grad_l1")
