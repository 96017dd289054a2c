"""How long a training step of each stream takes on this machine, measured with the run's own code.

Used to size a run to a wall-clock budget (``python -m lib.demo`` picks how many epochs fit its minutes) and
by ``bench/demo_step.py``. The steps really train: time a throwaway model, not the one you keep.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from lib.engine import distributed as D
from lib.engine.config import Config
from lib.engine.data_plan import StreamSchedule
from lib.engine.optim import build_optimizer
from lib.engine.precision import autocast, resolve_precision
from lib.engine.trainer import TrainStream


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_steps(
    model: nn.Module, streams: Sequence[TrainStream], cfg: Config, steps: int = 2, warmup: int = 1
) -> dict[str, float]:
    """Median seconds of one optimizer step (forward, backward, AdamW) of each stream, on real batches of its
    dataset, with the config's precision and optimizer. Batch loading and collation are not counted: in
    training, DataLoader workers overlap them with the steps."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps must be >= 1 and warmup >= 0, got {steps} and {warmup}")
    device = next(model.parameters()).device
    dtype = resolve_precision(cfg.precision, device)
    optimizer = build_optimizer(model, cfg)
    model.train()
    seconds: dict[str, float] = {}
    for stream in streams:
        times = []
        for i in range(warmup + steps):
            n = len(stream.dataset)
            items = [stream.dataset[(i * stream.batch_size + j) % n] for j in range(stream.batch_size)]
            batch = D.move_to_device(stream.collate_fn(items), device)
            _sync(device)
            started = time.perf_counter()
            with autocast(device, dtype):
                loss = stream.step_fn(model, batch)["loss"]
            loss.float().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            _sync(device)
            if i >= warmup:
                times.append(time.perf_counter() - started)
        seconds[stream.name] = statistics.median(times)
    return seconds


def mean_step_seconds(seconds: dict[str, float], streams: Sequence[TrainStream], cfg: Config) -> float:
    """The expected seconds of one optimizer step when streams are drawn as the trainer draws them, averaged
    over the run: a stream that starts late (``task_start``) counts only for the steps after its start."""
    schedule = StreamSchedule(list(streams), cfg.seed, 1, 0, cfg.task_sampling, 1, 1)
    starts = sorted({0.0, *(s.start for s in streams)})
    costs = np.array([seconds[s.name] for s in streams])
    mean = 0.0
    for begin, end in zip(starts, [*starts[1:], 1.0]):
        weights = np.array([w if s.start <= begin else 0.0 for w, s in zip(schedule.weights, streams)])
        mean += (end - begin) * float((weights * costs).sum() / weights.sum())
    return mean
