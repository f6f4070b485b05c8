"""What the store's writer costs the trainer: a CNN4 PGD-10 training step with and without logging.

    python bench/writer_overhead.py                    # CPU, batch 128, MNIST-sized random data
    python bench/writer_overhead.py --device cuda      # the figure the issue's 2% target is about

Each step is what ``trainer.loop.train_batch`` does for Standard adversarial training: PGD-10 with
random start and the exact final FOSC, one trajectory example recorded, the update, and (logging
on) the same ``RunWriter.log`` calls with the same columns. Blocks of steps with logging off and on
alternate in one process (order flipped every pair) and are compared pair by pair, so drifting
machine load hits both alike. An 'on' block ends with ``RunWriter.flush`` inside its timing, so all
of the writer's work for it (to host, Arrow, zstd, a chunk file per table and block, where a real
run writes one per 10 s) is counted as if the trainer had waited for it: an upper bound. On CPU the clock is the process's CPU time over all threads (the
writer's included) with one torch thread, which a busy shared machine disturbs far less than wall
time. Also printed, in wall time: what the training thread spends inside ``log()``, and what
``end_epoch`` blocks it for on a full epoch's rows (``--epoch-rows``), spread over that epoch's steps.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from store import runs  # noqa: E402
from store.writer import RunWriter  # noqa: E402
from trainer.attacks import PGD  # noqa: E402
from trainer.attacks import losses  # noqa: E402
from trainer.models import build_model  # noqa: E402


def make_step(model, opt, attack, device):
    def step(x0, y, idx, b, writer, epoch):
        model.eval()  # bn_mode eval during the attack, as the quick preset
        res = attack(model, x0, y, record=torch.tensor([0], device=device), exact_final=True)
        model.train()
        logits = model(res.x_adv)
        loss_vec = losses.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss_vec.mean().backward()
        opt.step()
        correct = logits.detach().argmax(1) == y
        t_log = time.perf_counter()
        if writer is not None:  # the very calls of trainer.loop.train_batch
            fosc, steps, traj = res.fosc, res.steps, res.trajectory
            writer.log("examples", epoch, {
                "batch": torch.full_like(idx, b, dtype=torch.int32), "idx": idx.int(), "fosc": fosc.float(),
                "loss": loss_vec.detach().float(), "steps": steps.short(), "correct": correct,
                "c_t": torch.full_like(fosc, float("nan")),
            })
            k, r = traj["fosc"].shape
            writer.log("steps", epoch, {
                "batch": torch.full((k * r,), b, dtype=torch.int32), "idx": idx[traj["pos"]].int().repeat(k),
                "step": traj["step"].repeat_interleave(r), "fosc": traj["fosc"].reshape(-1),
                "loss": traj["loss"].reshape(-1), "active": traj["active"].reshape(-1),
            })
            log_times.append(time.perf_counter() - t_log)
        # What the loop sums per batch; .item() syncs, as the loop's progress bar does.
        return (loss_vec.detach().sum() + correct.sum()).item()
    log_times: list[float] = []
    step.log_times = log_times
    return step


def time_arm(step, data, n_steps, writer, epoch, device, clock) -> float:
    """Seconds per step on ``clock``. With a writer, its flush (writing what these steps logged)
    is inside the timing: the writer's work counts in full, as if the trainer waited for it."""
    x, y, idx = data
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = clock()
    for b in range(n_steps):
        step(x[b], y[b], idx[b], b, writer, epoch)
    if writer is not None:
        writer.flush()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (clock() - t0) / n_steps


def end_epoch_cost(run_dir: Path, rows: int, batch: int) -> float:
    """Seconds end_epoch blocks the trainer to compact an epoch of ``rows`` examples (default flush)."""
    w = RunWriter(run_dir, "bench-end-epoch", flush_rows=100_000, flush_seconds=10.0)
    g = torch.Generator().manual_seed(1)
    for b in range(math.ceil(rows / batch)):
        n = min(batch, rows - b * batch)
        w.log("examples", 0, {"batch": torch.full((n,), b, dtype=torch.int32),
                              "idx": torch.arange(b * batch, b * batch + n, dtype=torch.int32),
                              "fosc": torch.rand(n, generator=g), "loss": torch.rand(n, generator=g),
                              "steps": torch.randint(0, 11, (n,), dtype=torch.int16, generator=g),
                              "correct": torch.rand(n, generator=g) > 0.5, "c_t": torch.zeros(n)})
    time.sleep(1.0)  # let the thread take the queue, as it does during an epoch's training
    t0 = time.perf_counter()
    w.end_epoch(0)
    dt = time.perf_counter() - t0
    w.close()
    return dt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--reps", type=int, default=8, help="pairs of off/on blocks (order alternating)")
    p.add_argument("--steps", type=int, default=4, help="training steps per block")
    p.add_argument("--epoch-rows", type=int, default=50_000, help="rows of one epoch for the end_epoch cost")
    p.add_argument("--flush-rows", type=int, default=100_000)
    p.add_argument("--flush-seconds", type=float, default=10.0)
    p.add_argument("--clock", choices=("cpu", "wall"), default=None,
                   help="cpu: the process's CPU seconds, all threads (the writer's too), with one torch "
                        "thread: steady on a busy CPU machine (default on cpu); wall: default on cuda")
    ns = p.parse_args(argv)
    device = torch.device(ns.device)
    clock_name = ns.clock or ("cpu" if device.type == "cpu" else "wall")
    clock = time.process_time if clock_name == "cpu" else time.perf_counter
    if clock_name == "cpu":
        torch.set_num_threads(1)  # idle OpenMP workers spin and bill CPU time at random
    torch.manual_seed(0)
    model = build_model("cnn4", 1, 10, 28).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    attack = PGD(0.3, 0.01, 10, random_start=True)
    step = make_step(model, opt, attack, device)
    n, B = ns.steps, ns.batch_size
    data = (torch.rand(n, B, 1, 28, 28, device=device), torch.randint(0, 10, (n, B), device=device),
            torch.arange(n * B, device=device).view(n, B))

    with tempfile.TemporaryDirectory(prefix="fosc-bench-") as tmp:
        run_dir = Path(tmp) / "bench"
        runs.write_json(run_dir / runs.CONFIG, {"strategy": "standard"})
        writer = RunWriter(run_dir, "bench", flush_rows=ns.flush_rows, flush_seconds=ns.flush_seconds)
        time_arm(step, data, 1, writer, 0, device, clock)  # warm-up of both arms
        time_arm(step, data, 1, None, 0, device, clock)
        cpu0 = time.clock_gettime(time.pthread_getcpuclockid(writer._thread.ident))
        off, on = [], []
        for r in range(ns.reps):  # adjacent off/on blocks see the same machine load: compare in pairs
            arms = [(off, None), (on, writer)] if r % 2 == 0 else [(on, writer), (off, None)]
            for times, w in arms:
                times.append(time_arm(step, data, n, w, r + 1, device, clock))
        # CPU the writer thread used (to host, Arrow, zstd, files): on a GPU run a spare core's work.
        thread_cpu = time.clock_gettime(time.pthread_getcpuclockid(writer._thread.ident)) - cpu0
        writer.end_epoch(0)
        writer.close()
        compact_s = end_epoch_cost(Path(tmp) / "bench-end-epoch", ns.epoch_rows, B)

    t_off, t_on = statistics.median(off), statistics.median(on)
    ratios = sorted(100 * (b / a - 1) for a, b in zip(off, on))
    steps_per_epoch = math.ceil(ns.epoch_rows / B)
    per_step_compact = compact_s / steps_per_epoch
    log_ms = statistics.median(step.log_times) * 1e3
    blocked = log_ms / 1e3 + per_step_compact
    print(f"device {device}, torch threads {torch.get_num_threads()}, CNN4 PGD-10, batch {B}, "
          f"{ns.reps} pairs of off/on blocks of {n} steps, timed in {clock_name} seconds")
    print(f"step, logging off : median {t_off * 1e3:9.2f} ms  (blocks: {', '.join(f'{t * 1e3:.0f}' for t in off)})")
    print(f"step, logging on  : median {t_on * 1e3:9.2f} ms  (blocks: {', '.join(f'{t * 1e3:.0f}' for t in on)})")
    print(f"on vs off, paired : median {statistics.median(ratios):+.2f} % (pairs from {ratios[0]:+.1f} % to "
          f"{ratios[-1]:+.1f} %); 'on' includes waiting for the writer's flush")
    total = statistics.median(ratios) + 100 * per_step_compact / t_off
    print(f"writer overhead   : {total:+.2f} % of step time = paired median + end_epoch share (target <= 2 %)")
    print(f"log() calls       : median {log_ms:.3f} ms per step on the training thread "
          f"({100 * log_ms / (t_off * 1e3):.3f} % of step time)")
    print(f"end_epoch         : {compact_s * 1e3:.1f} ms for {ns.epoch_rows} rows = {per_step_compact * 1e3:.3f} ms "
          f"per step over {steps_per_epoch} steps ({100 * per_step_compact / t_off:.3f} % of step time)")
    print(f"trainer blocked   : {blocked * 1e3:.3f} ms per step in log() + end_epoch = {100 * blocked / t_off:.3f} % "
          f"of step time (target <= 2 %)")
    per = thread_cpu / (ns.reps * n)
    print(f"writer thread CPU : {per * 1e3:.3f} ms per step ({100 * per / t_off:.3f} % of step time; "
          f"another core's time on a GPU run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
