"""torchrun / DistributedDataParallel glue. With one process every function is a cheap no-op.

Rank 0 decides what must be decided once (the run folder and its name, control-file changes, stop);
every other rank follows. Each rank trains on positions ``rank::world`` of every global batch and
logs its own rows; gradients are averaged by DDP, so the parameters stay equal on every rank.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as td

BACKEND_ENV = "FOSC_DIST_BACKEND"
DUMP_ENV = "FOSC_DUMP_FINAL_WEIGHTS"  # test hook: each rank saves its final state_dict there


def rank_world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get(BACKEND_ENV) != "gloo" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank())
        td.init_process_group(backend)
    if td.is_initialized():
        return td.get_rank(), td.get_world_size()
    return 0, 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    if not td.is_initialized():
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def from_rank0(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; every rank gets its result, or raises its exception.

    Used for creating (or checking) the run folder: two ranks racing to create it would fail, and a
    default name made from the clock could differ between ranks.
    """
    rank, world = rank_world()
    if world == 1:
        return fn()
    box: list[Any] = [None]
    if rank == 0:
        try:
            box[0] = (True, fn())
        except Exception as e:  # handed to the other ranks, so every rank reports the same error
            box[0] = (False, e)
    td.broadcast_object_list(box, src=0)
    ok, value = box[0]
    if not ok:
        raise value
    return value


def rank0_control(changes: list, stop: bool) -> tuple[list, bool]:
    """Rank 0's control-file changes and a stop seen by any rank, identical on every rank.

    Ranks poll the control file at slightly different moments; applying a new lr one step apart
    would make the parameters drift, and a stop seen by one rank only would hang the others.
    """
    if not td.is_initialized():
        return changes, stop
    out: list[Any] = [None] * td.get_world_size()
    td.all_gather_object(out, (changes, bool(stop)))
    return out[0][0], any(s for _, s in out)


def broadcast_buffers(model: torch.nn.Module) -> None:
    """Give every rank rank 0's BatchNorm statistics (each rank updated them on its own examples),
    so the ranks end an epoch with equal models, as a run resumed from rank 0's checkpoint starts."""
    if td.is_initialized():
        for buf in model.buffers():
            td.broadcast(buf, src=0)


def check_batches(n: int, batch_size: int, world: int) -> None:
    """Every rank must get at least one example of every batch, or DDP's gradient all-reduce hangs."""
    last = n % batch_size
    if world > 1 and (batch_size < world or 0 < last < world):
        from trainer.config import ConfigError

        raise ConfigError(f"with {world} processes every batch needs >= {world} examples; the last batch has "
                          f"{last or batch_size} of {n}: change --n-train or --batch-size")


def dump_final_weights(model: torch.nn.Module, rank: int) -> None:
    """Test hook (``FOSC_DUMP_FINAL_WEIGHTS=<dir>``): save this rank's final state_dict as rank<R>.pt."""
    out = os.environ.get(DUMP_ENV)
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, Path(out) / f"rank{rank}.pt")


def barrier() -> None:
    if td.is_initialized():
        td.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if td.is_initialized():
        t = t.clone()
        td.all_reduce(t)
    return t


def cleanup() -> None:
    if td.is_initialized():
        td.destroy_process_group()
