"""torch.distributed set-up, small collectives, and deterministic data sharding.

Launch with `torchrun --nproc_per_node N script.py ...` (or `python -m torch.distributed.launch`): the
rank comes from the environment (WORLD_SIZE, RANK, LOCAL_RANK); NCCL on GPU, gloo on CPU. Without those
variables every helper works as a single process.

Training sharding (`train_shard`): each (seed, stream, epoch) gives one permutation of the dataset,
identical on every rank. It is WRAPPED to a multiple of the global batch (batch_size x world_size) by
repeating its first items, so every rank runs the same number of steps, no item is skipped, and at most one
global batch per epoch holds a few repeats. Global batch j is the j-th contiguous chunk of that order; rank r
takes every world_size-th item of it (a strided slice), so one process with batch B*W sees exactly the items
that W processes with batch B see.

Evaluation sharding (`eval_shard_range`): contiguous chunks of possibly unequal size, no padding, so every
item is evaluated by exactly one rank; `gather_eval` concatenates the ranks' results in rank order, which is
the original item order.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Subset


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size, local rank and the device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def select_device(local_rank: int) -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def find_free_port() -> int:
    """A TCP port that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(timeout_s: int = 1800, force_process_group: bool = False) -> DistInfo:
    """Join the process group started by torchrun (idempotent); a single process stays without one.

    `force_process_group=True` creates a one-process group when no launcher is used (DeepSpeed needs one).
    """
    world_size = _env_int("WORLD_SIZE", 1)
    local_rank = _env_int("LOCAL_RANK", 0)
    device = select_device(local_rank)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)
    if world_size == 1 and not force_process_group:
        return DistInfo(0, 1, local_rank, device)
    if world_size == 1:
        for name, value in (
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", str(find_free_port())),
        ):
            os.environ.setdefault(name, value)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device)


def get_rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if get_world_size() > 1:
        dist.barrier()


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_reduce_tensor(t: torch.Tensor, op: str = "mean") -> torch.Tensor:
    """Reduce a tensor over ranks ("mean", "sum" or "max"); returns a new tensor on t's device."""
    if get_world_size() == 1:
        return t.clone()
    buf = t.detach().to(_comm_device(), torch.float64 if t.is_floating_point() else t.dtype, copy=True)
    reduce_op = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op]
    dist.all_reduce(buf, op=reduce_op)
    if op == "mean":
        buf /= get_world_size()
    return buf.to(t.device, t.dtype)


def all_reduce_mean(value: torch.Tensor | float) -> torch.Tensor | float:
    """Mean over ranks of a tensor (returned as a tensor) or a number (returned as a float)."""
    if isinstance(value, torch.Tensor):
        return all_reduce_tensor(value, "mean")
    return float(all_reduce_tensor(torch.tensor(float(value), dtype=torch.float64), "mean"))


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def move_to_device(obj: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Move every tensor inside nested mappings (returned as dicts) / lists / tuples to `device`."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: move_to_device(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(move_to_device(v, device, non_blocking) for v in obj))
    if isinstance(obj, list | tuple):
        return type(obj)(move_to_device(v, device, non_blocking) for v in obj)
    return obj


# ---- training shards


def epoch_permutation(n_items: int, seed: int, epoch: int, stream: int = 0) -> np.ndarray:
    """The item order of one (seed, stream, epoch): the same on every rank, no communication."""
    return np.random.default_rng([seed, stream, epoch]).permutation(n_items)


def num_train_batches(n_items: int, batch_size: int, world_size: int) -> int:
    """Steps per rank per epoch: ceil(n_items / global batch) (the tail is wrapped, never dropped)."""
    if n_items <= 0:
        raise ValueError("cannot train on an empty dataset")
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return -(-n_items // (batch_size * world_size))


@dataclass(frozen=True)
class TrainShard:
    """One rank's batches for one epoch: dataset indices and their positions in the global (wrapped) order."""

    indices: np.ndarray  # (n_batches, batch_size) dataset indices
    positions: np.ndarray  # (n_batches, batch_size) position of each item in the epoch's global order


def train_shard(
    n_items: int, batch_size: int, world_size: int, rank: int, seed: int, epoch: int, stream: int = 0
) -> TrainShard:
    """This rank's batches for one epoch; see the module docstring for the wrap-and-stride rule."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    n_batches = num_train_batches(n_items, batch_size, world_size)
    total = n_batches * batch_size * world_size
    order = np.resize(epoch_permutation(n_items, seed, epoch, stream), total)  # np.resize repeats cyclically
    positions = np.arange(rank, total, world_size).reshape(n_batches, batch_size)
    return TrainShard(order[positions], positions)


# ---- eval shards


def eval_shard_range(n_items: int, world_size: int | None = None, rank: int | None = None) -> range:
    """This rank's contiguous chunk of [0, n_items): sizes differ by at most one, nothing is padded."""
    world_size = get_world_size() if world_size is None else world_size
    rank = get_rank() if rank is None else rank
    base, extra = divmod(n_items, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def eval_subset(dataset: Dataset) -> Subset:
    """The part of `dataset` this rank evaluates (see `eval_shard_range`)."""
    return Subset(dataset, list(eval_shard_range(len(dataset))))  # type: ignore[arg-type]


def merge_eval_shards(parts: Sequence[Sequence[Any]]) -> list[Any]:
    """Concatenate per-rank results (rank order = original item order)."""
    return [item for part in parts for item in part]


def gather_eval(local_results: Sequence[Any]) -> list[Any]:
    """All ranks' per-item results, each item exactly once, in the original order (on every rank)."""
    return merge_eval_shards(all_gather_object(list(local_results)))
