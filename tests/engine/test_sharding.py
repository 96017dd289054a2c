"""Training shards (equal steps, wrap, global-batch equivalence) and eval shards (exactly once, in order)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from lib.engine.distributed import (
    eval_shard_range,
    gather_eval,
    merge_eval_shards,
    num_train_batches,
    train_shard,
)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n_items", [1, 7, 24, 25, 50])
def test_train_shards_equal_steps_cover_everything_and_match_one_process(world_size, n_items):
    batch = 3
    shards = [train_shard(n_items, batch, world_size, r, seed=5, epoch=2) for r in range(world_size)]
    n_batches = num_train_batches(n_items, batch, world_size)
    assert {s.indices.shape for s in shards} == {(n_batches, batch)}  # every rank, same number of steps
    single = train_shard(n_items, batch * world_size, 1, 0, seed=5, epoch=2)
    assert single.indices.shape[0] == n_batches
    for j in range(n_batches):  # global batch j of W ranks == batch j of one process with batch B*W
        union = sorted(x for s in shards for x in s.indices[j])
        assert union == sorted(single.indices[j])
    counts = Counter(int(x) for s in shards for x in s.indices.ravel())
    assert set(counts) == set(range(n_items))  # nothing dropped
    if n_items >= batch * world_size:  # repeats only fill up the last global batch
        first = [x for s in shards for x in s.indices[:-1].ravel()]
        assert len(first) == len(set(first))
        assert sum(counts.values()) - n_items < batch * world_size


def test_train_shards_deterministic_per_epoch_and_stream():
    a = train_shard(40, 4, 2, 1, seed=1, epoch=0).indices
    assert np.array_equal(a, train_shard(40, 4, 2, 1, seed=1, epoch=0).indices)
    assert not np.array_equal(a, train_shard(40, 4, 2, 1, seed=1, epoch=1).indices)
    assert not np.array_equal(a, train_shard(40, 4, 2, 1, seed=1, epoch=0, stream=1).indices)
    assert not np.array_equal(a, train_shard(40, 4, 2, 1, seed=2, epoch=0).indices)
    with pytest.raises(ValueError, match="empty"):
        train_shard(0, 4, 1, 0, seed=0, epoch=0)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
@pytest.mark.parametrize("n_items", [0, 1, 3, 10, 11])
def test_eval_shards_give_each_item_to_one_rank_in_order(world_size, n_items):
    ranges = [eval_shard_range(n_items, world_size, r) for r in range(world_size)]
    assert sum(len(r) for r in ranges) == n_items  # no padding
    assert max(len(r) for r in ranges) - min(len(r) for r in ranges) <= 1
    items = [f"item{i}" for i in range(n_items)]
    per_rank = [[items[i] for i in r] for r in ranges]  # what each rank would compute
    assert merge_eval_shards(per_rank) == items


def test_gather_eval_single_process_is_identity():
    assert gather_eval([3, 1, 2]) == [3, 1, 2]
    assert eval_shard_range(5) == range(5)


def test_two_gloo_ranks_gather_every_eval_item_once_in_order(two_process_run):
    for epoch in (1, 2):  # the toy evaluates 11 items on 2 ranks (6 + 5)
        ids = (two_process_run.out / f"eval_ids_epoch{epoch}.json").read_text()
        assert ids == str(list(range(11)))
    assert [r["n_items"] for r in two_process_run.records("eval")] == [11, 11]
