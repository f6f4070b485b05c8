"""Examples/s of a Standard PGD-10 training step: FOSC Lab's against a plain reference, same run.

The reference is what a careful researcher writes in eager PyTorch, fp32, following Algorithm 1's
loop with the same semantics as ours (random start, BatchNorm in eval mode while attacking, batch-
mean cross-entropy for the update) and no tricks: ``torch.autograd.grad`` of the batch-mean loss
with the weights still requiring grad, a ``.item()`` per step to log the mean FOSC, and per-example
rows kept as Python dicts and written to Parquet at the end. FOSC Lab's step is the trainer's own
``trainer.loop.train_batch`` with the full per-example logging on (RunWriter thread, a trajectory
row per batch). Repetitions are interleaved and medians reported.

    python -m bench.train_step                                   # CPU: CNN4, batch 128
    python -m bench.train_step --tools                           # + each speed tool on/off
    python -m bench.train_step --device cuda --tools --write-doc # GPU: CNN4, CNN8 x2, WRN-34-10
    python -m bench.train_step --models cnn4:16 --steps 2 --batches 1 --reps 1   # CI size
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import bench  # noqa: E402
from store.writer import RunWriter  # noqa: E402
from trainer import control, loop  # noqa: E402
from trainer.attacks import base as attack_base  # noqa: E402
from trainer.config import RunConfig  # noqa: E402
from trainer.data import Dataset  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.strategies import build_strategy  # noqa: E402

GPU_MODELS = "cnn4:128,cnn8:128,cnn8:512,wrn34_10:128"
SHAPES = {"cnn4": (1, 28, 0.3), "cnn8": (3, 32, 8 / 255), "wrn34_10": (3, 32, 8 / 255),
          "preact_resnet18": (3, 32, 8 / 255)}


# ---- the plain reference ------------------------------------------------------------------------
def reference_attack(model, x0, y, eps: float, alpha: float, steps: int):
    """PGD-K with random start, FOSC logged per step (Algorithm 1's loop without the stop rule).
    Returns (x_adv, FOSC of the last iterate whose gradient was taken, per-step mean FOSC)."""
    x = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp(0, 1)
    means = []
    for _ in range(steps):
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x), y)
        (g,) = torch.autograd.grad(loss, x)
        g = g * len(y)  # the per-example gradients that FOSC is defined on
        fosc = eps * g.abs().flatten(1).sum(1) - ((x - x0) * g).flatten(1).sum(1)
        means.append(fosc.mean().item())
        x = torch.min(torch.max(x.detach() + alpha * g.sign(), x0 - eps), x0 + eps).clamp(0, 1)
    return x, fosc.detach(), means


def reference_step(model, opt, x0, y, ids, eps: float, alpha: float, steps: int, rows: list) -> None:
    """One Standard PGD-K training step, BN in eval mode while attacking, rows kept as Python dicts."""
    model.eval()
    x, fosc, means = reference_attack(model, x0, y, eps, alpha, steps)
    model.train()
    logits = model(x)
    loss_vec = F.cross_entropy(logits, y, reduction="none")
    opt.zero_grad(set_to_none=True)
    loss_vec.mean().backward()
    opt.step()
    correct = (logits.argmax(1) == y).tolist()
    for i, f, lo, c in zip(ids.tolist(), fosc.tolist(), loss_vec.tolist(), correct):
        rows.append({"idx": i, "fosc": f, "loss": lo, "steps": steps, "correct": c, "step_fosc_mean": means[-1]})


# ---- FOSC Lab's step, with a tool switched on or off ---------------------------------------------
class NullWriter:
    """Logging off: what the step costs without handing rows to the store."""

    def log(self, *a, **k):
        pass

    def end_epoch(self, epoch):
        pass

    def close(self):
        pass


@dataclass
class Variant:
    name: str
    cfg: dict = field(default_factory=dict)          # RunConfig overrides
    log: bool = True
    fold: bool = True                                 # BN folded into convs while attacking
    freeze: bool = True                               # weights frozen while attacking
    channels_last: bool | None = None                # None: as trainer.loop.setup does (CUDA only)
    fused_sgd: bool = False
    compile: bool = False


def tool_variants(device: torch.device, exact_default: bool) -> list[Variant]:
    return [
        Variant("no logging", log=False),
        Variant(f"exact_final_fosc={not exact_default}", cfg={"exact_final_fosc": not exact_default}),
        Variant("no BN folding", fold=False),
        Variant("weights not frozen", freeze=False),
        Variant("NCHW" if device.type == "cuda" else "channels_last", channels_last=device.type != "cuda"),
        Variant("bf16 autocast", cfg={"bf16": True}),
        Variant("fused SGD", fused_sgd=True),
    ]


@contextlib.contextmanager
def patched(v: Variant, net: torch.nn.Module):
    """Switch the engine's BN folding / weight freezing off for one variant (bench-only); with
    ``compile`` the attack runs the compiled module ``net`` (it shares the model's weights)."""
    saved = loop.fold_bn, attack_base.input_grad_only
    if v.compile:
        loop.fold_bn = lambda model: net
    elif not v.fold:
        loop.fold_bn = lambda model: None
    if not v.freeze:
        attack_base.input_grad_only = lambda model: contextlib.nullcontext()
    try:
        yield
    finally:
        loop.fold_bn, attack_base.input_grad_only = saved


def make_data(model_name: str, n: int, device: torch.device, seed: int = 0) -> Dataset:
    c, s, _ = SHAPES[model_name]
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, s, s, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return Dataset(model_name, x, y, x[:0], y[:0], torch.arange(n, device=device))


def make_ctx(cfg: RunConfig, v: Variant, model: torch.nn.Module, data: Dataset, run_dir: Path) -> loop.Context:
    device = data.x_train.device
    model = copy.deepcopy(model)
    if v.channels_last or (v.channels_last is None and device.type == "cuda"):
        model = model.to(memory_format=torch.channels_last)
    opt_kw = {"fused": True} if v.fused_sgd else {}
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **opt_kw)
    net = torch.compile(model) if v.compile else model
    writer = RunWriter(run_dir, run_dir.name) if v.log else NullWriter()
    return loop.Context(cfg=cfg, run_dir=run_dir, name=run_dir.name, device=device, data=data, heldout=None,
                        model=model, net=net, opt=opt, strategy=build_strategy(cfg), writer=writer,
                        ctl=control.ControlFile(run_dir / "control.json"))


def ours_block(cfg: RunConfig, v: Variant, model, data: Dataset, batch: int, batches: int, run_dir: Path) -> Callable:
    ctx = make_ctx(cfg, v, model, data, run_dir)
    plan = ctx.strategy.plan(0)
    record = torch.zeros(1, dtype=torch.long, device=ctx.device)  # one trajectory row per batch
    state = {"epoch": 0}

    def block():
        e = state["epoch"]
        with patched(v, ctx.net):
            for b in range(batches):
                ids = torch.arange(b * batch, (b + 1) * batch, device=ctx.device)
                loop.train_batch(ctx, e, b, plan, ids, record)

    def after():  # once per epoch in a run: compaction, outside the per-step figure
        ctx.writer.end_epoch(state["epoch"])
        state["epoch"] += 1
    block.ctx, block.after = ctx, after
    return block


def reference_block(cfg: RunConfig, model, data: Dataset, batch: int, batches: int, run_dir: Path) -> Callable:
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = {"epoch": 0}

    rows: list = []

    def block():
        for b in range(batches):
            ids = torch.arange(b * batch, (b + 1) * batch, device=data.x_train.device)
            reference_step(model, opt, data.x_train[ids], data.y_train[ids], ids, cfg.eps, cfg.step_size,
                           cfg.steps, rows)

    def after():  # once per epoch in a run, outside the per-step figure as for ours
        pd.DataFrame(rows).to_parquet(run_dir / f"epoch-{state['epoch']}.parquet")
        rows.clear()
        state["epoch"] += 1
    block.after = after
    return block


# ---- the benchmark ------------------------------------------------------------------------------
def bench_model(name: str, batch: int, args, device: torch.device, tmp: Path) -> list[dict]:
    c, s, eps = SHAPES[name]
    cfg = RunConfig(strategy="standard", model=name, eps=eps, steps=args.steps, batch_size=batch,
                    device=device.type, trajectory_examples=1).validate()
    torch.manual_seed(0)
    model = build_model(name, c, 10, s).to(device)
    data = make_data(name, batch * args.batches, device)
    variants = [Variant("fosc-lab")]
    if args.tools:
        variants += tool_variants(device, cfg.exact_final_fosc)
    if args.compile:
        variants.append(Variant("torch.compile (no folding)", fold=False, compile=True))
    blocks = {"reference": reference_block(cfg, model, data, batch, args.batches, _dir(tmp, name, batch, "ref"))}
    for v in variants:
        vcfg = cfg.replace(**v.cfg)
        blocks[v.name] = ours_block(vcfg, v, model, data, batch, args.batches, _dir(tmp, name, batch, v.name))
    for fn in blocks.values():  # warm-up: kernel selection, first allocations, compilation
        fn()
        fn.after()
    times = bench.interleaved(blocks, args.reps, device, args.clock)
    for fn in blocks.values():
        if hasattr(fn, "ctx"):
            fn.ctx.writer.close()
    n = batch * args.batches
    return [{"model": name, "batch": batch, "variant": k, "ex_s": n / bench.median(ts), "reps": len(ts)}
            for k, ts in times.items()]


def _dir(tmp: Path, name: str, batch: int, variant: str) -> Path:
    d = tmp / f"{name}-{batch}-{''.join(ch if ch.isalnum() else '_' for ch in variant)}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def report(results: list[dict]) -> list[str]:
    lines = []
    for key in dict.fromkeys((r["model"], r["batch"]) for r in results):
        rs = [r for r in results if (r["model"], r["batch"]) == key]
        ref = next(r["ex_s"] for r in rs if r["variant"] == "reference")
        ours = next(r["ex_s"] for r in rs if r["variant"] == "fosc-lab")
        for r in rs:
            line = f"{key[0]}:{key[1]:<4d} {r['variant']:<28s} {r['ex_s']:9.1f} ex/s"
            if r["variant"] != "reference":
                line += f"   ratio vs reference {r['ex_s'] / ref:5.2f}x"
            if r["variant"] not in ("reference", "fosc-lab"):
                line += f"   vs fosc-lab {r['ex_s'] / ours:5.2f}x"
            lines.append(line)
    return lines


def doc_body(results: list[dict], device: torch.device, args) -> str:
    out = [f"Measured {bench.today()} on {bench.environment(device)}, median of {args.reps} interleaved "
           f"repetitions of {args.batches} batch(es) each, timed in {args.clock} seconds, with:", "", f"    {bench.command_line()}", "",
           f"| model | batch | variant | examples per {args.clock} s | vs reference | vs fosc-lab |",
           "|---|---|---|---|---|---|"]
    for key in dict.fromkeys((r["model"], r["batch"]) for r in results):
        rs = [r for r in results if (r["model"], r["batch"]) == key]
        ref = next(r["ex_s"] for r in rs if r["variant"] == "reference")
        ours = next(r["ex_s"] for r in rs if r["variant"] == "fosc-lab")
        for r in rs:
            vr = "" if r["variant"] == "reference" else f"{r['ex_s'] / ref:.2f}x"
            vo = "" if r["variant"] in ("reference", "fosc-lab") else f"{r['ex_s'] / ours:.2f}x"
            out.append(f"| {key[0]} | {key[1]} | {r['variant']} | {r['ex_s']:.1f} | {vr} | {vo} |")
    return "\n".join(out)


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--models", default=None, help=f"name:batch,... (cpu default cnn4:128; cuda default {GPU_MODELS})")
    p.add_argument("--steps", type=int, default=10, help="PGD steps K")
    p.add_argument("--batches", type=int, default=2, help="batches per timed block")
    p.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median reported)")
    p.add_argument("--tools", action="store_true", help="also time each speed tool switched on/off")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: 1 with --clock cpu)")
    p.add_argument("--clock", choices=("wall", "cpu"), default=None,
                   help="wall seconds, or the process's CPU seconds (default: cpu on --device cpu, wall on cuda)")
    p.add_argument("--write-doc", action="store_true", help="update this device's figures in docs/BENCHMARKS.md")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.exit(2, "error: --device cuda but no CUDA device is available\n")
    try:
        args.models = [(m.split(":")[0], int(m.split(":")[1])) for m in
                       (args.models or (GPU_MODELS if args.device == "cuda" else "cnn4:128")).split(",")]
    except (IndexError, ValueError):
        p.exit(2, "error: --models takes name:batch[,name:batch...], e.g. cnn4:128\n")
    if any(m not in SHAPES for m, _ in args.models) or min(args.steps, args.batches, args.reps) < 1:
        p.exit(2, f"error: models are {', '.join(SHAPES)}; steps, batches and reps must be >= 1\n")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bench.choose_clock(args)
    device = torch.device(args.device)
    results = []
    with tempfile.TemporaryDirectory(prefix="fosc-bench-") as tmp:
        for name, batch in args.models:
            rs = bench_model(name, batch, args, device, Path(tmp))
            results += rs
            print("\n".join(report(rs)), flush=True)
    if args.write_doc:
        bench.update_doc("Training step", f"Figures: {device.type}", doc_body(results, device, args))
        print(f"updated {bench.DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
