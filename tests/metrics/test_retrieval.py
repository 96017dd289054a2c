"""Retrieval ranks and summaries on hand-computed score matrices, including ties and shared videos."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.metrics import retrieval as R

DISTINCT = np.array(
    [
        [0.9, 0.1, 0.5],  # text 0 → video 0: best → rank 1
        [0.8, 0.3, 0.7],  # text 1 → video 1: 0.8 and 0.7 beat it → rank 3
        [0.2, 0.6, 0.4],  # text 2 → video 2: 0.6 beats it → rank 2
    ]
)


def test_one_text_per_video_both_directions():
    assert R.t2v_ranks(DISTINCT, [0, 1, 2]).tolist() == [1, 3, 2]
    videos, ranks = R.v2t_ranks(DISTINCT, [0, 1, 2])
    # columns: video 0 [.9 .8 .2] → 1; video 1 [.1 .3 .6] → 2; video 2 [.5 .7 .4] → 3
    assert videos.tolist() == [0, 1, 2] and ranks.tolist() == [1, 2, 3]
    metrics = R.retrieval_metrics(DISTINCT, [0, 1, 2])
    assert metrics["t2v_R1"] == pytest.approx(100 / 3) and metrics["t2v_R5"] == 100.0
    assert (metrics["t2v_MedR"], metrics["t2v_MeanR"], metrics["t2v_n"]) == (2.0, 2.0, 3.0)
    keys = ("R1", "R5", "R10", "MedR", "MeanR", "n")
    assert set(metrics) == {f"{d}_{k}" for d in ("t2v", "v2t") for k in keys}


def test_several_texts_per_video_and_a_video_without_text():
    scores = np.array(
        [
            [0.5, 0.9, 0.1],  # text 0 → video 0: rank 2
            [0.7, 0.2, 0.3],  # text 1 → video 0: rank 1
            [0.4, 0.6, 0.8],  # text 2 → video 1: rank 2
            [0.3, 0.5, 0.1],  # text 3 → video 1: rank 1
        ]
    )
    text_to_video = [0, 0, 1, 1]
    assert R.t2v_ranks(scores, text_to_video).tolist() == [2, 1, 2, 1]
    videos, ranks = R.v2t_ranks(scores, text_to_video)
    # video 0: its texts score .5/.7, best .7 and no other text beats it → 1 (text 0 does not count
    # against it); video 1: its best text scores .6, text 0 (.9) beats it → 2; video 2 has no text
    assert videos.tolist() == [0, 1] and ranks.tolist() == [1, 2]
    summary = R.rank_summary(ranks, ks=(1,))
    assert summary == {"R1": 50.0, "MedR": 1.5, "MeanR": 1.5, "n": 2.0}


def test_ties_optimistic_and_pessimistic():
    scores = np.array([[0.5, 0.5, 0.5], [0.2, 0.5, 0.5]])
    assert R.t2v_ranks(scores, [0, 1], ties="optimistic").tolist() == [1, 1]
    assert R.t2v_ranks(scores, [0, 1]).tolist() == [3, 2]  # pessimistic by default
    constant = np.zeros((5, 5))
    assert R.t2v_ranks(constant, range(5), ties="optimistic").tolist() == [1] * 5
    assert R.t2v_ranks(constant, range(5)).tolist() == [5] * 5  # a collapsed model is not credited
    # two ground-truth texts tied with each other never count against one another
    _, ranks = R.v2t_ranks(np.array([[0.5, 0.1], [0.5, 0.1], [0.5, 0.9]]), [0, 0, 1], ties="pessimistic")
    assert ranks.tolist() == [2, 1]  # video 0: text 2 (not GT) ties at .5 → 2; video 1: 1
    with pytest.raises(ValueError, match="ties="):
        R.t2v_ranks(scores, [0, 1], ties="random")


def test_torch_scores_and_larger_random_matrix_against_a_direct_count():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(60, 20))
    gt = rng.integers(0, 20, size=60)
    direct = [1 + int(np.sum(np.delete(scores[i], gt[i]) > scores[i, gt[i]])) for i in range(60)]
    assert R.t2v_ranks(torch.tensor(scores), gt).tolist() == direct
    assert R.t2v_ranks(torch.tensor(scores, dtype=torch.float16), gt).shape == (60,)
    videos, ranks = R.v2t_ranks(scores, gt)
    for v, rank in zip(videos, ranks):
        texts = np.flatnonzero(gt == v)
        best = scores[texts, v].max()
        others = np.delete(scores[:, v], texts)
        assert rank == 1 + np.sum(others > best)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        R.t2v_ranks(np.array([[np.nan, 1.0]]), [0])
    with pytest.raises(ValueError, match="2 entries for 3 texts"):
        R.t2v_ranks(DISTINCT, [0, 1])
    with pytest.raises(ValueError, match="not a video index in 0..2"):
        R.t2v_ranks(DISTINCT, [0, 1, 3])
    with pytest.raises(ValueError, match="matrix"):
        R.t2v_ranks(np.zeros(3), [0, 1, 2])
    with pytest.raises(ValueError, match="no queries"):
        R.rank_summary(np.array([]))
