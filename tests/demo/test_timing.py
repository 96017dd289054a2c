"""Timing a run's steps (lib.demo.timing): what the demo sizes its training with."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from lib.demo.timing import mean_step_seconds, time_train_steps
from lib.engine.config import Config
from lib.engine.trainer import TrainStream


class Slow(nn.Module):
    """A linear model whose step sleeps ``delay`` seconds per batch item (a known, stream-specific cost)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)


def stream(name: str, delay: float, batch: int, weight: float, seen: list) -> TrainStream:
    def step(model, x: torch.Tensor) -> dict:
        seen.append((name, x.shape[0]))
        time.sleep(delay * x.shape[0])
        return {"loss": model.lin(x).square().mean()}

    data = [torch.full((3,), float(i)) for i in range(5)]
    return TrainStream(name, data, torch.stack, batch, step, weight)


def test_steps_are_timed_per_stream_and_really_train():
    model, seen = Slow(), []
    streams = [stream("fast", 0.002, 2, 3.0, seen), stream("slow", 0.01, 4, 1.0, seen)]
    before = model.lin.weight.detach().clone()
    cfg = Config({"lr": 0.1, "task_sampling": "uniform"})
    seconds = time_train_steps(model, streams, cfg, steps=2, warmup=1)
    assert seen == [("fast", 2)] * 3 + [("slow", 4)] * 3  # one warm-up + two timed steps each, full batches
    assert 0.004 <= seconds["fast"] < 0.03 and 0.04 <= seconds["slow"] < 0.2
    assert not torch.equal(model.lin.weight, before)  # the optimizer stepped
    mean = mean_step_seconds(seconds, streams, cfg)
    assert mean == pytest.approx(0.75 * seconds["fast"] + 0.25 * seconds["slow"])
    sized = mean_step_seconds(seconds, streams, Config({"task_sampling": "size"}))
    batches = {"fast": 3, "slow": 2}  # 5 items in batches of 2 and 4
    expected = (3.0 * batches["fast"] * seconds["fast"] + batches["slow"] * seconds["slow"]) / (3.0 * 3 + 2)
    assert sized == pytest.approx(expected)
    with pytest.raises(ValueError, match="steps must be"):
        time_train_steps(model, streams, cfg, steps=0)


def test_a_late_stream_counts_only_for_the_steps_it_is_drawn():
    seen: list = []
    streams = [stream("fast", 0, 2, 1.0, seen), stream("slow", 0, 2, 3.0, seen)]
    streams[1].start = 0.4
    seconds = {"fast": 0.1, "slow": 0.5}
    # 40 % of the run only "fast" (0.1 s), then 1:3 (0.4 s a step)
    assert mean_step_seconds(seconds, streams, Config()) == pytest.approx(0.4 * 0.1 + 0.6 * 0.4)
