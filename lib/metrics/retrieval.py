"""Retrieval metrics from a text × video score matrix: ranks, R@K, median and mean rank.

``scores[i, j]`` is the score of text i against video j (higher = better match); ``text_to_video[i]`` is
the index of text i's ground-truth video. Several texts may share a video (MSR-VTT has 20 captions per
video; every caption is a query, as in the reference's evaluation).

* text → video: one query per text, one ground truth.
* video → text: one query per video that has at least one text; its rank is the BEST rank among its
  ground-truth texts (videos without any text are not queries).

Rank (1-based) of a query = 1 + the number of NON-ground-truth candidates that beat its best-scored
ground truth. Ties with non-ground-truth candidates are:

* ``ties="pessimistic"`` (default): ties count against the ground truth:
  ``rank = 1 + #{c not in GT: s_c >= s_gt}``, so a model that gives many videos the same score is never
  credited for it (a collapsed matching head used to report a high R@1 this way);
* ``ties="optimistic"``: only strictly higher scores count, a tie is resolved in the ground truth's favour:
  ``rank = 1 + #{c not in GT: s_c > s_gt}``.

The two agree whenever scores are distinct; a large gap between them flags a degenerate model (e.g.
constant scores give rank 1 optimistically and rank N pessimistically). Other ground truths of the same
query never push a rank down. NaN scores are an error.

R@K values are percentages (0–100), as reported in papers; median and mean rank are in rank units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TIES = ("optimistic", "pessimistic")
DEFAULT_KS = (1, 5, 10)


def ground_truth_ranks(scores, ground_truth: np.ndarray, ties: str = "pessimistic") -> np.ndarray:
    """Rank (1-based) of each query's best ground truth.

    ``scores``: (n_queries, n_candidates); ``ground_truth``: boolean (n_queries, n_candidates), True at the
    ground-truth candidates (at least one per row). Returns int64 (n_queries,).
    """
    if ties not in TIES:
        raise ValueError(f"ties={ties!r}; choose one of {TIES}")
    s = _as_matrix(scores)
    gt = np.asarray(ground_truth, dtype=bool)
    if gt.shape != s.shape:
        raise ValueError(f"ground truth mask {gt.shape} does not match the score matrix {s.shape}")
    missing = np.flatnonzero(~gt.any(axis=1))
    if missing.size:
        raise ValueError(f"queries {missing[:5].tolist()} have no ground-truth candidate")
    best = np.where(gt, s, -np.inf).max(axis=1, keepdims=True)
    beats = s > best if ties == "optimistic" else s >= best
    return 1 + (beats & ~gt).sum(axis=1).astype(np.int64)


def t2v_ranks(scores, text_to_video: Sequence[int], ties: str = "pessimistic") -> np.ndarray:
    """Text → video rank of each text's ground-truth video. Returns (n_text,)."""
    s = _as_matrix(scores)
    return ground_truth_ranks(s, _gt_mask(text_to_video, s.shape), ties)


def v2t_ranks(
    scores, text_to_video: Sequence[int], ties: str = "pessimistic"
) -> tuple[np.ndarray, np.ndarray]:
    """Video → text ranks: (video indices that have texts, best rank among each one's texts)."""
    s = _as_matrix(scores)
    gt = _gt_mask(text_to_video, s.shape).T  # (n_video, n_text)
    queried = np.flatnonzero(gt.any(axis=1))
    return queried, ground_truth_ranks(s.T[queried], gt[queried], ties)


def rank_summary(ranks: np.ndarray, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``R{k}`` (percent of queries with rank <= k), ``MedR`` (median rank), ``MeanR`` and ``n``."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        raise ValueError("no queries to summarise (empty rank list)")
    out = {f"R{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    out.update(MedR=float(np.median(ranks)), MeanR=float(np.mean(ranks)), n=float(ranks.size))
    return out


def retrieval_metrics(
    scores, text_to_video: Sequence[int], ties: str = "pessimistic", ks: Sequence[int] = DEFAULT_KS
) -> dict[str, float]:
    """Both directions: ``t2v_R1, t2v_R5, t2v_R10, t2v_MedR, t2v_MeanR, t2v_n`` and the same with ``v2t_``."""
    t2v = rank_summary(t2v_ranks(scores, text_to_video, ties), ks)
    v2t = rank_summary(v2t_ranks(scores, text_to_video, ties)[1], ks)
    return {**{f"t2v_{k}": v for k, v in t2v.items()}, **{f"v2t_{k}": v for k, v in v2t.items()}}


def _as_matrix(scores) -> np.ndarray:
    if hasattr(scores, "detach"):  # a torch tensor, possibly on an accelerator or in half precision
        scores = scores.detach().float().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be a (n_text, n_video) matrix, got shape {s.shape}")
    if np.isnan(s).any():
        rows = np.flatnonzero(np.isnan(s).any(axis=1))
        raise ValueError(f"scores contain NaN (rows {rows[:5].tolist()}); check the model outputs")
    return s


def _gt_mask(text_to_video: Sequence[int], shape: tuple[int, int]) -> np.ndarray:
    gt_index = np.asarray(text_to_video, dtype=np.int64)
    n_text, n_video = shape
    if gt_index.shape != (n_text,):
        raise ValueError(f"text_to_video has {gt_index.size} entries for {n_text} texts (score rows)")
    bad = np.flatnonzero((gt_index < 0) | (gt_index >= n_video))
    if bad.size:
        raise ValueError(
            f"text_to_video[{bad[0]}] = {gt_index[bad[0]]} is not a video index in 0..{n_video - 1}"
        )
    mask = np.zeros(shape, dtype=bool)
    mask[np.arange(n_text), gt_index] = True
    return mask
