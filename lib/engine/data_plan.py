"""The data plan of a training run: which stream and batch every micro-step uses, and how a batch is fetched.

Every step, one stream is chosen (`task_sampling`: "uniform" = proportional to the streams' `weight`,
"size" = to weight x batches per epoch) from an RNG seeded by (seed, epoch): every rank picks the same
stream without communicating. A stream with a `start` fraction (`task_start`) joins at that fraction of the
epochs. Each stream walks through its own epochs (`distributed.train_shard`), so an exhausted stream
restarts with its next permutation. An epoch is `steps_per_epoch` optimizer steps, by default the sum of the
streams' per-rank batches (divided by grad_accum). Items are fetched with RNGs seeded from their (seed,
stream, stream epoch, position) - the collate from (.., batch, rank) - so augmentation does not depend on
worker count or on a resume.

Everything here is a pure function of the seed, the epoch and the streams' cursors; `lib.engine.trainer`
holds the cursors and saves them in its checkpoints.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lib.engine import distributed as D


class Stream(Protocol):
    """What the plan reads of a stream (`lib.engine.trainer.TrainStream` is one)."""

    name: str
    dataset: Dataset
    collate_fn: Callable[[list[Any]], Any]
    batch_size: int
    weight: float
    start: float


@dataclass
class StreamCursor:
    """Where a stream is: its own epoch and the next batch in it."""

    epoch: int = 0
    batch: int = 0


@dataclass(frozen=True)
class BatchRef:
    """A micro-batch to fetch: stream, its epoch, batch number, dataset indices, global positions."""

    stream: int
    stream_epoch: int
    batch: int
    indices: tuple[int, ...]
    positions: tuple[int, ...]


class StreamSchedule:
    """Which stream and batch every micro-step of an epoch uses (a pure function of seed, epoch, cursors).

    A stream with ``start`` > 0 is not picked before epoch ``round(start * n_epochs)``; from then on it is
    picked in proportion to its weight like the others (:meth:`probs_at`).
    """

    def __init__(
        self,
        streams: Sequence[Stream],
        seed: int,
        world_size: int,
        rank: int,
        sampling: str,
        grad_accum: int,
        steps_per_epoch: int,
        n_epochs: int = 1,
    ):
        self.streams = streams
        self.seed, self.world_size, self.rank = seed, world_size, rank
        self.n_batches = [D.num_train_batches(len(s.dataset), s.batch_size, world_size) for s in streams]
        weights = np.array([s.weight for s in streams], dtype=np.float64)
        if sampling == "size":
            weights = weights * np.array(self.n_batches, dtype=np.float64)
        if (weights <= 0).any():
            raise ValueError("every stream needs a positive weight")
        bad = [s.name for s in streams if not 0.0 <= s.start < 1.0]
        if bad:
            raise ValueError(f"task_start must be in [0, 1) (a fraction of the epochs); streams {bad}")
        if streams and min(s.start for s in streams) > 0:
            raise ValueError("at least one stream must start at once (task_start 0) for the first epochs")
        self.weights = weights
        self.probs = weights / weights.sum()
        self.start_epochs = [round(s.start * n_epochs) for s in streams]
        self.grad_accum = grad_accum
        self.steps_per_epoch = steps_per_epoch or max(1, sum(self.n_batches) // grad_accum)
        self.micro_per_epoch = self.steps_per_epoch * grad_accum

    def refit(self, n_epochs: int, epoch: int) -> None:
        """A new run length of ``n_epochs``: streams not started by ``epoch`` move their start with it;
        started ones stay started."""
        self.start_epochs = [
            first if first <= epoch else max(epoch, round(s.start * n_epochs))
            for first, s in zip(self.start_epochs, self.streams)
        ]

    def probs_at(self, epoch: int) -> np.ndarray:
        """Probability of each stream at every micro-step of ``epoch`` (0 for streams not started yet)."""
        weights = np.where(np.array(self.start_epochs) <= epoch, self.weights, 0.0)
        return weights / weights.sum()

    def stream_choices(self, epoch: int) -> np.ndarray:
        if len(self.streams) == 1:
            return np.zeros(self.micro_per_epoch, dtype=np.int64)
        rng = np.random.default_rng([self.seed, epoch, len(self.streams)])
        return rng.choice(len(self.streams), size=self.micro_per_epoch, p=self.probs_at(epoch))

    def epoch_plan(
        self, epoch: int, cursors: Sequence[StreamCursor], micro_steps: int | None = None
    ) -> tuple[np.ndarray, list[StreamCursor]]:
        """(micro_steps, 3) array of (stream, stream_epoch, batch) and the cursors after the epoch: its first
        ``micro_steps`` micro-steps (default: all ``micro_per_epoch``; fewer for a shortened last epoch)."""
        choices = self.stream_choices(epoch)[: self.micro_per_epoch if micro_steps is None else micro_steps]
        cur = [StreamCursor(c.epoch, c.batch) for c in cursors]
        plan = np.empty((len(choices), 3), dtype=np.int64)
        for i, s in enumerate(choices):
            c = cur[s]
            plan[i] = (s, c.epoch, c.batch)
            c.batch += 1
            if c.batch == self.n_batches[s]:
                c.epoch, c.batch = c.epoch + 1, 0
        return plan, cur

    def shard(self, stream: int, stream_epoch: int) -> D.TrainShard:
        s = self.streams[stream]
        return D.train_shard(
            len(s.dataset), s.batch_size, self.world_size, self.rank, self.seed, stream_epoch, stream
        )


class PlanSampler(Sampler):
    """Yields the BatchRefs of (the rest of) an epoch plan, computing each stream shard once."""

    def __init__(self, schedule: StreamSchedule, plan: np.ndarray):
        self.schedule = schedule
        self.plan = plan

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[BatchRef]:
        shards: dict[int, tuple[int, D.TrainShard]] = {}
        for stream, stream_epoch, batch in self.plan.tolist():
            if stream not in shards or shards[stream][0] != stream_epoch:
                shards[stream] = (stream_epoch, self.schedule.shard(stream, stream_epoch))
            shard = shards[stream][1]
            yield BatchRef(
                stream,
                stream_epoch,
                batch,
                tuple(shard.indices[batch].tolist()),
                tuple(shard.positions[batch].tolist()),
            )


def derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([p % 2**63 for p in parts]).generate_state(1)[0])


def _seed_cpu_rngs(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched


@contextlib.contextmanager
def _isolated_rngs() -> Iterator[None]:
    """Restore python / numpy / torch-CPU RNG states afterwards (the fetch may run in the main process)."""
    state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


class BatchFetcher(Dataset):
    """Turns a BatchRef into (ref, collated batch), seeding every item and the collate deterministically."""

    def __init__(self, streams: Sequence[Stream], seed: int, rank: int):
        self.streams = streams
        self.seed = seed
        self.rank = rank

    def __len__(self) -> int:
        return 0  # indexed by BatchRef only

    def __getitem__(self, ref: BatchRef) -> tuple[BatchRef, Any]:  # type: ignore[override]
        stream = self.streams[ref.stream]
        with _isolated_rngs():
            items = []
            for index, position in zip(ref.indices, ref.positions):
                _seed_cpu_rngs(derived_seed(self.seed, ref.stream, ref.stream_epoch, position))
                items.append(stream.dataset[index])
            _seed_cpu_rngs(derived_seed(self.seed, ref.stream, ref.stream_epoch, -1 - ref.batch, self.rank))
            return ref, stream.collate_fn(items)


def _unpack(x: Any) -> Any:
    return x


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoder / transform threads x workers would oversubscribe the CPUs


def plan_loader(
    fetcher: BatchFetcher,
    schedule: StreamSchedule,
    plan: np.ndarray,
    n_workers: int,
    pin_memory: bool,
    seed: int,
) -> DataLoader:
    """A DataLoader yielding (BatchRef, collated batch) for every row of ``plan``, in order."""
    return DataLoader(
        fetcher,
        sampler=PlanSampler(schedule, plan),
        batch_size=None,
        collate_fn=_unpack,
        num_workers=n_workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if n_workers else None,
        generator=torch.Generator().manual_seed(seed),  # keeps the global torch RNG untouched
    )
