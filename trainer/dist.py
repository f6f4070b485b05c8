"""torchrun / DistributedDataParallel glue. With one process every function is a cheap no-op."""
from __future__ import annotations

import os

import torch
import torch.distributed as td


def rank_world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not td.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and os.environ.get("FOSC_DIST_BACKEND") != "gloo" else "gloo"
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
