"""The training loop: epoch -> batch -> attack -> update -> rows to the store.

Read it top to bottom: ``train`` sets up (or resumes) a run, then for every epoch asks the strategy
for its plan, and for every batch attacks, updates the model and hands the per-example rows to the
store's writer. Between batches it reads the run's control file (stop, c_max, T', lr). At the end of
an epoch the writer compacts the epoch, the epoch summary is written, the held-out PGD accuracy is
measured, and the checkpoint is written last: a run killed at any point resumes from the last
checkpoint and redoes only the unfinished epoch, whose partial rows are deleted first.
"""
from __future__ import annotations

import math
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from store import alarms, faults, files, insight, runs
from store.writer import RunWriter
from trainer import checkpoint, control, dist
from trainer.device import pick_device
from trainer.attacks import FGSM, PGD
from trainer.attacks.fold import fold_bn
from trainer.config import RunConfig
from trainer.data import Dataset, augment, epoch_order, load_dataset
from trainer.models import build_model
from trainer.strategies import EpochPlan, Strategy, build_attack, build_strategy  # noqa: F401 (build_attack: benches)

class StopRequested(Exception):
    """The user asked the run to stop (control file or SIGTERM/SIGINT)."""


@dataclass
class Context:
    cfg: RunConfig
    run_dir: Path
    name: str
    device: torch.device
    data: Dataset
    heldout: Dataset | None
    model: torch.nn.Module
    net: torch.nn.Module          # what the training forward calls (DDP wrapper or the model)
    opt: torch.optim.Optimizer
    strategy: Strategy
    writer: RunWriter
    ctl: control.ControlFile
    rank: int = 0
    world: int = 1
    start_epoch: int = 0
    best_acc: float = -1.0
    sampled: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    stop_signal: bool = False
    aug_gen: torch.Generator | None = None
    epoch: int = 0                # the epoch being trained (for status messages)
    base_lr: float = math.nan     # lr before milestones: cfg.lr, or what the control file set (checkpointed)


# What train_batch returns, summed over an epoch (then over ranks): one float64 tensor, these entries.
TOTALS = ("loss", "correct", "fosc", "steps", "n")


def named_totals(t: torch.Tensor) -> dict[str, float]:
    return dict(zip(TOTALS, t.tolist()))


# ---- the whole run ------------------------------------------------------------------------------
def train(cfg: RunConfig, run_dir: Path, name: str, resume: bool = False, progress=None) -> str:
    """Train (or resume) the run in ``run_dir``. Returns the final state: finished or stopped."""
    show_progress = progress is not None
    progress = progress or (lambda n, epoch: None)
    ctx = setup(cfg, run_dir, name, resume)
    ctx.epoch = ctx.start_epoch
    previous_handlers = _install_signal_handlers(ctx)
    write_status(ctx, "running", ctx.start_epoch, message="resumed" if resume else "started", fsync=True)
    _event(ctx, "resume" if resume else "start", f"from epoch {ctx.start_epoch}", ctx.start_epoch)
    try:
        estimate_c_max_if_due(ctx, after_epoch=None)
        apply_control(ctx, ctx.start_epoch, 0)
        for epoch in range(ctx.start_epoch, cfg.epochs):
            ctx.epoch = epoch
            info = train_epoch(ctx, epoch, progress if ctx.rank == 0 else (lambda n, e: None))
            ctx.writer.end_epoch(epoch)
            dist.barrier()
            dist.broadcast_buffers(ctx.model)
            end_of_epoch_strategy(ctx, epoch)
            if ctx.rank == 0:
                clean_acc, pgd_acc = heldout_accuracy(ctx)
                ctx.writer.write_epoch_summary(epoch_summary(ctx, epoch, info, clean_acc, pgd_acc))
                insight.update(ctx.run_dir, epoch)  # per-example prefix aggregates: data maps, forgetting
                best = not math.isnan(pgd_acc) and pgd_acc > ctx.best_acc
                if best:
                    ctx.best_acc = pgd_acc
                save_checkpoint(ctx, epoch, best or epoch == 0)
                alarms.record(ctx.run_dir, ctx.name, epoch)  # what is going wrong, as events (store.alarms)
            dist.barrier()
            write_status(ctx, "running", epoch + 1, message=f"epoch {epoch} done", fsync=True)
        ctx.writer.close()
        dist.dump_final_weights(ctx.model, ctx.rank)
        if cfg.eval_at_end and ctx.rank == 0:
            write_status(ctx, "running", cfg.epochs, message="evaluating")
            from trainer import evaluate
            # No batch boundary to stop at in here: SIGTERM stops at once (its rows stay marked partial).
            with control.stop_at_once(StopRequested, pending=ctx.stop_signal):
                evaluate.evaluate_run(run_dir, device=str(ctx.device), n=cfg.eval_n, progress=show_progress)
        write_status(ctx, "finished", cfg.epochs, message="finished", fsync=True)
        _event(ctx, "finish", "")
        return "finished"
    except StopRequested:
        ctx.writer.close()
        write_status(ctx, "stopped", ctx.epoch, message="stopped by user; resume with --resume", fsync=True)
        _event(ctx, "stop", "stopped by user")
        return "stopped"
    except BaseException as e:
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        try:
            write_status(ctx, "failed", ctx.epoch, message=msg, fsync=True)
        except OSError:
            pass
        raise
    finally:
        _restore_signal_handlers(previous_handlers)
        dist.cleanup()


# ---- setup and resume ---------------------------------------------------------------------------
def setup(cfg: RunConfig, run_dir: Path, name: str, resume: bool) -> Context:
    rank, world = dist.rank_world()
    device = pick_device(cfg.device, dist.local_rank())
    torch.manual_seed(cfg.seed)  # same initial weights on every rank
    # Every rank drops the same held-out examples from training; only rank 0 evaluates on them.
    data, heldout = load_dataset(cfg.dataset, cfg.data_root, device, heldout=cfg.heldout,
                                 n_train=cfg.n_train, n_test=cfg.n_test, seed=cfg.seed)
    dist.check_batches(len(data.y_train), cfg.batch_size, world)
    model = build_model(cfg.model, data.in_channels, 10, data.image_size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    net = dist.wrap(model, device)
    ctx = Context(cfg, run_dir, name, device, data, heldout, model, net, opt, build_strategy(cfg), None,
                  control.ControlFile(run_dir / runs.CONTROL), rank, world, base_lr=cfg.lr)
    sample_ids = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(cfg.seed + 7))
    ctx.sampled = np.zeros(len(data.y_train), dtype=bool)
    ctx.sampled[sample_ids[: cfg.trajectory_examples].numpy()] = True
    if resume:
        load_checkpoint(ctx)
    # Made after a resume deleted the unfinished epoch's files: its chunk numbers continue from what is left.
    ctx.writer = RunWriter(run_dir, name, rank=rank, flush_rows=cfg.flush_rows, flush_seconds=cfg.flush_seconds)
    return ctx


def load_checkpoint(ctx: Context) -> None:
    """Resume at the epoch after the last checkpoint, deleting every row of that epoch and later."""
    path = checkpoint.path(ctx.run_dir)
    if not path.exists():  # killed before the first epoch ended: start over, keeping nothing partial
        ctx.start_epoch = 0
    else:
        state = checkpoint.load(path, map_location=ctx.device)
        ctx.model.load_state_dict(state["model"])
        ctx.opt.load_state_dict(state["optimizer"])
        strategy_state = dict(state["strategy"])
        legacy_lr = strategy_state.pop("base_lr", ctx.cfg.lr)  # checkpoints before base_lr moved out
        ctx.strategy.load_state_dict(strategy_state)
        ctx.base_lr = float(state.get("base_lr", legacy_lr))
        ctx.best_acc = state.get("best_acc", -1.0)
        ctx.ctl.load_state_dict(state.get("control", {}))
        ctx.start_epoch = int(state["epoch"]) + 1
    dist.barrier()
    if ctx.rank == 0:
        runs.clean_temp_files(ctx.run_dir)
        runs.remove_epochs_from(ctx.run_dir, ctx.start_epoch)
    dist.barrier()


# ---- Dynamic's c_max = 'auto' (paper §4.1) ------------------------------------------------------
def estimate_c_max_if_due(ctx: Context, after_epoch: int | None) -> None:
    """--c-max auto: estimate once, on the untrained model (``--c-max-auto-at start``, before epoch 0)
    or after the warm-up epoch 0 (``warmup``: FOSC grows several-fold in the first epochs, so an
    estimate on the untrained model makes Dynamic Standard early). Logged as a ``c_max_auto`` event
    at the epoch it was made (-1: before training); the value is kept in the checkpoint."""
    st = ctx.strategy.state
    if "c_max" not in st or st["c_max"] is not None:
        return
    due = ctx.cfg.c_max_auto_at == "start" if after_epoch is None else after_epoch == 0
    if due:
        st["c_max"] = estimate_c_max(ctx)
        _event(ctx, "c_max_auto", f"{st['c_max']:.6g}", -1 if after_epoch is None else after_epoch)


def estimate_c_max(ctx: Context) -> float:
    """Mean FOSC of FGSM examples of the current model on the first ``c_max_batches`` batches."""
    cfg, data = ctx.cfg, ctx.data
    order = epoch_order(len(data.y_train), cfg.seed, 0, "cpu")
    n = min(len(order), cfg.c_max_batches * cfg.batch_size)
    ids = order[:n][ctx.rank::ctx.world].to(ctx.device)
    attack = FGSM(cfg.eps, norm=cfg.norm, fosc_set=cfg.fosc_set)
    ctx.model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=ctx.device)
    for chunk in ids.split(cfg.batch_size):
        r = attack(ctx.model, data.x_train[chunk], data.y_train[chunk])
        total += torch.stack([r.fosc.double().sum(), torch.tensor(float(len(chunk)), device=ctx.device, dtype=torch.float64)])
    total = dist.all_reduce_sum(total)
    return float(total[0] / total[1])


# ---- control between batches --------------------------------------------------------------------
def apply_control(ctx: Context, epoch: int, batch: int) -> bool:
    """Apply what the user changed in the control file since the last look; log each change.
    Returns True if the strategy's schedule (c_max, T') changed, so the epoch's plan is redone."""
    # Under torchrun rank 0 reads the file and every rank applies its reading at the same batch.
    changes, stop = dist.rank0_control(ctx.ctl.poll() if ctx.rank == 0 else [], ctx.ctl.stop or ctx.stop_signal)
    replan = False
    for key, value in changes:
        st = ctx.strategy.state
        if key == "lr":
            old = lr_at(ctx, epoch)
            ctx.base_lr = value / ctx.cfg.lr_gamma ** milestones_passed(ctx.cfg, epoch)  # later milestones still divide it
            set_lr(ctx, epoch)
        elif key in ("c_max", "t_prime") and key in st:
            old, st[key], replan = st[key], value, True
        elif key == "error":
            _event(ctx, "control_error", str(value), epoch, batch)
            continue
        else:
            _event(ctx, "control_ignored", f"{key}={value}: not used by strategy {ctx.cfg.strategy}", epoch, batch)
            continue
        _event(ctx, f"set_{key}", f"{old} -> {value}", epoch, batch)
    if stop:
        raise StopRequested()
    return replan


# ---- the learning rate: step decay at the milestones ---------------------------------------------
def milestones_passed(cfg: RunConfig, epoch: int) -> int:
    return sum(epoch >= m for m in cfg.milestones)


def lr_at(ctx: Context, epoch: int) -> float:
    return ctx.base_lr * ctx.cfg.lr_gamma ** milestones_passed(ctx.cfg, epoch)


def set_lr(ctx: Context, epoch: int) -> None:
    for group in ctx.opt.param_groups:
        group["lr"] = lr_at(ctx, epoch)


# ---- one epoch ----------------------------------------------------------------------------------
def train_epoch(ctx: Context, epoch: int, progress) -> dict:
    cfg, data = ctx.cfg, ctx.data
    plan = ctx.strategy.plan(epoch)
    set_lr(ctx, epoch)
    # Every random draw of an epoch derives from (seed, epoch, rank): a resumed epoch is the same.
    torch.manual_seed(cfg.seed * 7919 + epoch * 104_729 + ctx.rank)
    ctx.aug_gen = torch.Generator().manual_seed(cfg.seed * 31 + epoch * 1_000_003 + ctx.rank)
    order = epoch_order(len(data.y_train), cfg.seed, epoch, "cpu")
    n_batches = math.ceil(len(order) / cfg.batch_size)
    totals = torch.zeros(len(TOTALS), dtype=torch.float64, device=ctx.device)
    t0 = time.time()
    bar = progress(n_batches, epoch)
    for b in range(n_batches):
        if apply_control(ctx, epoch, b):
            plan = ctx.strategy.plan(epoch)
        ids_cpu = order[b * cfg.batch_size:(b + 1) * cfg.batch_size][ctx.rank::ctx.world]
        if len(ids_cpu) == 0:
            continue
        pos = np.nonzero(ctx.sampled[ids_cpu.numpy()])[0]
        record = torch.from_numpy(pos).to(ctx.device) if len(pos) else None
        totals += train_batch(ctx, epoch, b, plan, ids_cpu.to(ctx.device), record)
        if bar is not None:
            bar.update(1)
            if b % 10 == 0 or b == n_batches - 1:
                t = named_totals(totals)
                bar.set_postfix(loss=f"{t['loss'] / t['n']:.3f}", acc=f"{t['correct'] / t['n']:.3f}",
                                fosc=f"{t['fosc'] / t['n']:.4f}", steps=f"{t['steps'] / t['n']:.2f}",
                                c_t=("-" if math.isnan(plan.c_t) else f"{plan.c_t:.3f}"), refresh=False)
        if b % 20 == 0:
            write_status(ctx, "running", epoch, b)
    if bar is not None:
        bar.close()
    t = named_totals(dist.all_reduce_sum(totals))
    return {"plan": plan, "wall_s": time.time() - t0, "n": t["n"], "train_adv_acc": t["correct"] / max(t["n"], 1)}


# ---- one batch: attack, update, rows to the store --------------------------------------------------
def train_batch(ctx: Context, epoch: int, b: int, plan: EpochPlan, ids: torch.Tensor, record: torch.Tensor | None):
    cfg, data = ctx.cfg, ctx.data
    x0, y = data.x_train[ids], data.y_train[ids]
    if _augment_on(cfg):
        x0 = augment(x0, ctx.aug_gen)
    ctx.model.train(cfg.bn_mode == "train")
    if plan.attack is None:
        # No attack this epoch: FOSC of the clean example itself (x_k = x_0), from one gradient.
        probe = PGD(cfg.eps, cfg.step_size, 1, random_start=False, norm=cfg.norm, fosc_set=cfg.fosc_set)
        g, _, _ = probe.grad(ctx.model, x0, y)
        fosc, fosc_box, grad_l1 = probe.measures(x0, x0, x0, g)
        x_adv, steps, traj = x0, torch.zeros(len(y), dtype=torch.int32, device=x0.device), None
    else:
        attack = ctx.strategy.attack(plan)
        rule = ctx.strategy.stop_rule(plan, len(y), x0.device)
        compact = rule is not None and cfg.bn_mode == "eval" and cfg.compact != "never"
        # Eval-mode BatchNorm folded into the conv before it: the same function, no BN work per step.
        folded = fold_bn(ctx.model) if cfg.bn_mode == "eval" else None
        net = ctx.model if folded is None else folded
        res = attack(net, x0, y, stop_rule=rule, record=record, compact=compact,
                     exact_final=cfg.exact_final_fosc,
                     center_on_start=cfg.official_code_compat and cfg.strategy == "dynamic")
        x_adv, fosc, steps, traj = res.x_adv, res.fosc, res.steps, res.trajectory
        fosc_box, grad_l1 = res.fosc_box, res.grad_l1
    faults.hit("batch")  # test-only kill point (FOSC_FAULT); a no-op otherwise
    ctx.model.train()
    loss_vec, logits = ctx.strategy.train_loss(ctx.net, x0, x_adv, y, epoch)
    ctx.opt.zero_grad(set_to_none=True)
    loss_vec.mean().backward()
    ctx.opt.step()
    logits = logits.detach().float()
    correct = logits.argmax(1) == y
    idx = data.train_ids[ids]
    ctx.writer.log("examples", epoch, {
        "batch": torch.full_like(idx, b, dtype=torch.int32), "idx": idx.int(), "fosc": fosc.float(),
        "fosc_box": fosc_box.float(), "grad_l1": grad_l1.float(),
        "loss": loss_vec.detach().float(), "steps": steps.short(), "correct": correct,
        "p_true": logits.softmax(1).gather(1, y[:, None]).squeeze(1),  # from the update's own logits
        "c_t": torch.full_like(fosc, plan.c_t),  # NaN for strategies without a threshold
    })
    if traj is not None:
        k, r = traj["fosc"].shape
        ctx.writer.log("steps", epoch, {
            "batch": torch.full((k * r,), b, dtype=torch.int32), "idx": idx[traj["pos"]].int().repeat(k),
            "step": traj["step"].repeat_interleave(r),
            **{m: traj[m].reshape(-1) for m in ("fosc", "fosc_box", "grad_l1", "loss", "active")},
        })
    return torch.stack([loss_vec.detach().sum().double(), correct.sum().double(), fosc.double().nan_to_num().sum(),
                        steps.double().sum(), torch.tensor(float(len(y)), dtype=torch.float64, device=y.device)])  # TOTALS


def _augment_on(cfg: RunConfig) -> bool:
    return cfg.augment if cfg.augment is not None else cfg.dataset == "cifar10"


# ---- end of an epoch ----------------------------------------------------------------------------
def end_of_epoch_strategy(ctx: Context, epoch: int) -> None:
    """The strategy's look back at the epoch (Curriculum may roll back), then --c-max auto if due."""
    rollback = ctx.strategy.end_epoch(epoch, lambda k: heldout_accuracy(ctx, k)[1], lambda: _weights(ctx))
    if rollback is not None:  # every rank decides the same: same weights, same held-out noise
        ctx.model.load_state_dict(rollback)
        _event(ctx, "rollback", f"to the lesson's best weights; next epoch: PGD-{ctx.strategy.plan(epoch + 1).steps}", epoch)
    estimate_c_max_if_due(ctx, after_epoch=epoch)


def heldout_accuracy(ctx: Context, steps: int | None = None) -> tuple[float, float]:
    """Clean and PGD-``steps`` (default ``--heldout-pgd-steps``) accuracy on the fixed held-out subset
    (Rice et al. 2020's early-stopping signal; Curriculum's PGD-k signal). PGD-0 is the clean accuracy."""
    h = ctx.heldout
    if h is None or len(h.y_train) == 0:
        return math.nan, math.nan
    cfg = ctx.cfg
    steps = cfg.heldout_pgd_steps if steps is None else steps
    attack = PGD(cfg.eps, cfg.step_size, max(steps, 1), random_start=True, norm=cfg.norm)
    ctx.model.eval()
    clean = adv = 0
    gen_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed + 99)  # the same attack noise every epoch, and no drift of the training RNG
    for ids in torch.arange(len(h.y_train), device=ctx.device).split(cfg.batch_size * 2):
        x, y = h.x_train[ids], h.y_train[ids]
        with torch.no_grad():
            clean += (ctx.model(x).argmax(1) == y).sum().item()
        xa = attack(ctx.model, x, y, exact_final=False).x_adv if steps > 0 else x
        with torch.no_grad():
            adv += (ctx.model(xa).argmax(1) == y).sum().item()
    torch.set_rng_state(gen_state)
    n = len(h.y_train)
    return clean / n, adv / n


def _weights(ctx: Context) -> dict:
    return {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}


def epoch_summary(ctx: Context, epoch: int, info: dict, clean_acc: float, pgd_acc: float) -> dict:
    """Per-epoch figures, computed from the epoch's compacted rows in the store (all ranks)."""
    d = runs.epoch_dir(ctx.run_dir, "examples", epoch)
    tbl = pq.ParquetDataset([str(p) for p in files.epoch_files(d)]).read(columns=["fosc", "steps", "loss", "correct"])
    fosc = tbl["fosc"].to_numpy(zero_copy_only=False).astype(np.float64)
    fosc = fosc[~np.isnan(fosc)]
    plan: EpochPlan = info["plan"]
    st = ctx.strategy.state
    q = np.quantile(fosc, [0.1, 0.5, 0.9]) if len(fosc) else [math.nan] * 3
    return {
        "epoch": epoch, "lr": lr_at(ctx, epoch), "c_t": plan.c_t,
        "c_max": st.get("c_max") if st.get("c_max") is not None else math.nan,
        "t_prime": st.get("t_prime", math.nan), "k_max": plan.steps, "n": tbl.num_rows,
        "fosc_mean": float(fosc.mean()) if len(fosc) else math.nan,
        "fosc_q10": float(q[0]), "fosc_q50": float(q[1]), "fosc_q90": float(q[2]),
        "below_ct": float((fosc <= plan.c_t).mean()) if len(fosc) and not math.isnan(plan.c_t) else math.nan,
        "steps_mean": float(np.mean(tbl["steps"].to_numpy())) if tbl.num_rows else math.nan,
        "loss_mean": float(np.mean(tbl["loss"].to_numpy())) if tbl.num_rows else math.nan,
        "train_adv_acc": info["train_adv_acc"], "heldout_clean_acc": clean_acc, "heldout_pgd_acc": pgd_acc,
        "wall_s": info["wall_s"], "examples_per_s": info["n"] / max(info["wall_s"], 1e-9),
    }


def save_checkpoint(ctx: Context, epoch: int, best: bool) -> None:
    if ctx.rank != 0:
        return
    state = {"epoch": epoch, "model": ctx.model.state_dict(), "optimizer": ctx.opt.state_dict(),
             "strategy": ctx.strategy.state_dict(), "best_acc": ctx.best_acc, "config": ctx.cfg.to_dict(),
             "control": ctx.ctl.state_dict(), "base_lr": ctx.base_lr}
    if best:  # written first: 'last' is the resume point and must never be older than 'best'
        checkpoint.save(checkpoint.path(ctx.run_dir, "best"), state)
    checkpoint.save(checkpoint.path(ctx.run_dir, "last"), state)


# ---- status, events, signals --------------------------------------------------------------------
def write_status(ctx: Context, state: str, epoch: int, batch: int = -1, message: str = "", fsync: bool = False) -> None:
    if ctx.rank != 0:
        return
    runs.write_json(ctx.run_dir / runs.STATUS, {
        "state": state, "epoch": epoch, "batch": batch, "epochs": ctx.cfg.epochs, "pid": os.getpid(),
        "host": socket.gethostname(), "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "message": message,
    }, fsync=fsync)


def _event(ctx: Context, kind: str, detail: str, epoch: int = -1, batch: int = -1) -> None:
    """Events are written once per run, by rank 0 (the events table has no rank column)."""
    if ctx.rank == 0:
        ctx.writer.event(kind, detail, epoch, batch)


def _install_signal_handlers(ctx: Context) -> dict:
    """SIGTERM/SIGINT finish the current batch and stop cleanly; returns the handlers they replace."""
    def handler(signum, frame):
        ctx.stop_signal = True
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (tests calling train in a thread)
            pass
    return previous


def _restore_signal_handlers(previous: dict) -> None:
    """An in-process caller (a test, a notebook) gets its own handlers back when training ends."""
    for sig, h in previous.items():
        try:
            signal.signal(sig, h)
        except ValueError:
            pass
