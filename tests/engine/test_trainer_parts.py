"""Loop pieces tested in-process: stream schedule, deterministic fetch, precision, DeepSpeed config."""

from __future__ import annotations

import json
import logging
import random
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from lib.engine import precision as precision_module
from lib.engine.config import Config, ConfigError
from lib.engine.data_plan import BatchFetcher, BatchRef, StreamCursor, StreamSchedule
from lib.engine.deepspeed_support import deepspeed_config
from lib.engine.precision import resolve_precision
from lib.engine.trainer import TrainStream


class Noisy(Dataset):
    """Items drawn from the global RNGs (like a random crop would be)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple:
        return i, random.random(), float(np.random.rand()), float(torch.rand(()))


def stream(name: str, n: int, batch: int, weight: float = 1.0) -> TrainStream:
    return TrainStream(name, Noisy(n), list, batch, step_fn=lambda model, b: {}, weight=weight)


def schedule(streams, sampling="uniform", accum=1, steps=0, seed=0) -> StreamSchedule:
    return StreamSchedule(streams, seed, world_size=2, rank=0, sampling=sampling, grad_accum=accum,
                          steps_per_epoch=steps)  # fmt: skip


def test_epoch_is_the_sum_of_stream_batches_and_choice_is_seeded():
    s = schedule([stream("a", 40, 4), stream("b", 16, 4)])  # 5 + 2 batches per rank
    assert (s.steps_per_epoch, s.micro_per_epoch) == (7, 7)
    assert np.array_equal(
        s.stream_choices(3), schedule([stream("a", 40, 4), stream("b", 16, 4)]).stream_choices(3)
    )
    assert not np.array_equal(s.stream_choices(3), s.stream_choices(4))
    s2 = schedule([stream("a", 40, 4), stream("b", 16, 4)], accum=2, steps=10)
    assert (s2.steps_per_epoch, s2.micro_per_epoch) == (10, 20)


def test_sampling_uniform_weighted_or_by_size():
    streams = [stream("a", 400, 4), stream("b", 100, 4, weight=3.0)]  # 50 and 13 batches per rank
    assert schedule(streams).probs == pytest.approx([0.25, 0.75])
    assert schedule(streams, sampling="size").probs == pytest.approx([50 / 89, 39 / 89])
    counts = Counter(schedule(streams, steps=4000).stream_choices(0).tolist())
    assert counts[1] / 4000 == pytest.approx(0.75, abs=0.03)


def test_a_stream_with_a_start_fraction_joins_at_that_epoch():
    late = stream("late", 40, 4, weight=3.0)
    late.start = 0.5
    s = StreamSchedule([stream("a", 40, 4), late], 0, 1, 0, "uniform", 1, 200, n_epochs=5)
    assert s.start_epochs == [0, 2]  # round(0.5 * 5)
    for epoch in (0, 1):
        assert np.array_equal(s.probs_at(epoch), [1.0, 0.0])
        assert not (s.stream_choices(epoch) == 1).any()
    assert np.allclose(s.probs_at(2), [0.25, 0.75])
    share = (s.stream_choices(3) == 1).mean()
    assert 0.65 < share < 0.85
    for start, match in ((1.0, "task_start must be in"), (-0.1, "task_start must be in")):
        late.start = start
        with pytest.raises(ValueError, match=match):
            StreamSchedule([stream("a", 40, 4), late], 0, 1, 0, "uniform", 1, 0, n_epochs=5)
    first, late.start = stream("a", 40, 4), 0.5
    first.start = 0.2
    with pytest.raises(ValueError, match="at least one stream must start at once"):
        StreamSchedule([first, late], 0, 1, 0, "uniform", 1, 0, n_epochs=5)


def test_exhausted_stream_restarts_with_its_next_permutation():
    s = schedule([stream("a", 8, 2), stream("b", 4, 2)])  # 2 + 1 batches per rank -> 3 micro-steps
    plan, cursors = s.epoch_plan(0, [StreamCursor(), StreamCursor()])
    stream_b = [tuple(row) for row in plan.tolist() if row[0] == 1]
    assert stream_b == [(1, e, 0) for e in range(len(stream_b))]  # each visit starts b's next epoch
    assert cursors[1] == StreamCursor(len(stream_b), 0)
    plan_again, _ = s.epoch_plan(0, [StreamCursor(), StreamCursor()])
    assert np.array_equal(plan, plan_again)
    plan_next, _ = s.epoch_plan(1, cursors)
    assert all(e >= len(stream_b) for st, e, _ in plan_next.tolist() if st == 1)


def test_fetch_is_seeded_per_item_and_leaves_global_rngs_alone():
    streams = [stream("a", 10, 3)]
    fetch = BatchFetcher(streams, seed=7, rank=0)
    ref = BatchRef(stream=0, stream_epoch=2, batch=1, indices=(4, 5, 6), positions=(6, 8, 10))
    torch.manual_seed(123)
    _, first = fetch[ref]
    after = torch.rand(())
    torch.manual_seed(999)  # a different global state: same batch, global state untouched
    _, second = fetch[ref]
    assert first == second and first[0][0] == 4
    torch.manual_seed(123)
    assert torch.rand(()) == after
    moved = BatchRef(
        stream=0, stream_epoch=2, batch=0, indices=(5, 4), positions=(8, 6)
    )  # other rank / batch
    assert sorted(fetch[moved][1]) == sorted(first[:2])  # an item's randomness follows its position


@pytest.mark.parametrize("native_bf16", [True, False])
def test_precision_resolution_on_cpu(monkeypatch, caplog, native_bf16):
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: native_bf16)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if native_bf16 else None)
    assert resolve_precision("fp32", cpu) is None
    with caplog.at_level(logging.WARNING, logger="lavender"):
        assert resolve_precision("bf16", cpu) == torch.bfloat16  # explicit: honoured either way
    assert ("much slower than fp32" in caplog.text) is not native_bf16
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", cpu)


def test_deepspeed_config_built_from_keys_or_checked_from_json(tmp_path):
    cfg = Config({"grad_accum": 4, "max_grad_norm": 1.0, "zero_stage": 2})
    built = deepspeed_config(cfg, micro_batch=6, dtype=torch.bfloat16)
    assert built["train_micro_batch_size_per_gpu"] == 6 and built["gradient_accumulation_steps"] == 4
    assert built["zero_optimization"] == {"stage": 2} and built["bf16"] == {"enabled": True}
    assert built["gradient_clipping"] == 1.0 and "fp16" not in built
    assert deepspeed_config(cfg, 6, torch.float16)["fp16"]["enabled"] is True

    def from_json(data: dict, dtype: torch.dtype | None = None) -> dict:
        (tmp_path / "ds.json").write_text(json.dumps(data))
        return deepspeed_config(cfg.override({"deepspeed_config": str(tmp_path / "ds.json")}), 6, dtype)

    user = from_json({"zero_optimization": {"stage": 1}, "bf16": {"enabled": True}, "train_batch_size": 99},
                     torch.bfloat16)  # fmt: skip
    assert user["zero_optimization"] == {"stage": 1} and "train_batch_size" not in user
    assert user["gradient_accumulation_steps"] == 4 and user["train_micro_batch_size_per_gpu"] == 6
    assert from_json({"zero_optimization": {"stage": 2}}, torch.bfloat16)["bf16"] == {"enabled": True}
    with pytest.raises(ConfigError, match=r"enables \['fp16'\] but --precision is auto"):
        from_json({"fp16": {"enabled": True}}, None)
    with pytest.raises(ConfigError, match="remove the 'optimizer' section"):
        from_json({"optimizer": {"type": "Adam"}})
    with pytest.raises(ConfigError, match="gradient_accumulation_steps differs"):
        from_json({"gradient_accumulation_steps": 2})
    with pytest.raises(ConfigError, match="ZeRO stage 3"):
        from_json({"zero_optimization": {"stage": 3}})


def test_refitting_the_length_moves_only_streams_not_started_yet():
    late, later = stream("late", 40, 4), stream("later", 40, 4)
    late.start, later.start = 0.3, 0.6
    s = StreamSchedule([stream("a", 40, 4), late, later], 0, 1, 0, "uniform", 1, 10, n_epochs=10)
    assert s.start_epochs == [0, 3, 6]
    s.refit(20, epoch=4)  # "late" started at 3 and stays; "later" moves to round(0.6 * 20)
    assert s.start_epochs == [0, 3, 12]
    s.refit(5, epoch=4)  # "later" would start at 3, already past: it starts now
    assert s.start_epochs == [0, 3, 4]
