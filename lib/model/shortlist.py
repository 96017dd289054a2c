"""Shortlists for two-stage retrieval: the top-k candidates of each query by dot product of embeddings,
then a re-score of only those (by the MLM matching head), merged into one ranking.

:func:`top_k` is exact: a matrix product in torch (chunked over queries, so memory stays at
``chunk x gallery``), or ``faiss-cpu``'s exact inner-product index (``IndexFlatIP``) when asked for or when
the gallery passes :data:`FAISS_MIN_GALLERY` and faiss is installed (``pip install .[fast]``;
``bench/retrieval_fast.py`` measures both). Both give the same sets; ties may be ordered differently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

INDEXES = ("auto", "torch", "faiss")
FAISS_MIN_GALLERY = 50_000
"""Gallery size from which ``index="auto"`` uses faiss. Exact top-16 of 1,000 queries on a quiet 2-core Xeon
(bench/retrieval_fast.py, BENCHMARKS.md): torch's chunked matrix products and faiss's exact
``IndexFlatIP`` tie at 10k videos (38 vs 37 ms), faiss is 1.3x faster at 100k (343 vs 434 ms), and past
~1M a torch chunk's (chunk x gallery) scores grow large where faiss keeps memory flat."""


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def top_k(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, index: str = "auto", chunk: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(indices (Q, k), similarities (Q, k)) of each query's ``k`` most similar gallery rows, best first."""
    if index not in INDEXES:
        raise ValueError(f"shortlist index {index!r}; choose one of {INDEXES}")
    k = min(k, gallery.shape[0])
    use_faiss = index == "faiss" or (index == "auto" and gallery.shape[0] >= FAISS_MIN_GALLERY)
    if use_faiss:
        if not faiss_available():
            if index == "faiss":
                raise ImportError("shortlist index 'faiss' needs the faiss-cpu package (pip install it)")
        else:
            import faiss

            db = faiss.IndexFlatIP(gallery.shape[1])
            db.add(np.ascontiguousarray(gallery.float().cpu().numpy()))
            sims, ids = db.search(np.ascontiguousarray(queries.float().cpu().numpy()), k)
            return ids.astype(np.int64), sims.astype(np.float64)
    g = gallery.float()
    ids, sims = [], []
    for start in range(0, queries.shape[0], chunk):
        found = (queries[start : start + chunk].float() @ g.T).topk(k, dim=1)
        ids.append(found.indices.cpu().numpy())
        sims.append(found.values.double().cpu().numpy())
    if not ids:
        return np.zeros((0, k), np.int64), np.zeros((0, k))
    return np.concatenate(ids), np.concatenate(sims)


def dual_softmax(similarity: np.ndarray, temp: float = 0.01) -> np.ndarray:
    """VALOR's dual softmax at inference: each (text, video) similarity weighted by the softmax over the
    texts of that video (a prior that a video's best text should be this one)."""
    s = np.asarray(similarity, dtype=np.float64)
    prior = np.exp((s - s.max(axis=0, keepdims=True)) / temp)
    return s * (prior / prior.sum(axis=0, keepdims=True))


def merge_rerank(coarse: np.ndarray, shortlist: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """One score matrix for ranking: each row's shortlisted candidates above all the others, ordered by their
    ``fine`` scores; the rest keep their ``coarse`` order below.

    ``coarse``: (Q, N); ``shortlist``: (Q, k) candidate indices; ``fine``: (Q, k) their scores. Within a row
    the fine scores are mapped affinely into (span + 1, span + 2], span = the row's coarse range, which keeps
    their order and their ties."""
    out = np.asarray(coarse, dtype=np.float64).copy()
    if shortlist.size == 0:
        return out
    low, high = out.min(axis=1, keepdims=True), out.max(axis=1, keepdims=True)
    f = np.asarray(fine, dtype=np.float64)
    f_low, f_high = f.min(axis=1, keepdims=True), f.max(axis=1, keepdims=True)
    scaled = (f - f_low) / np.where(f_high > f_low, f_high - f_low, 1.0)
    np.put_along_axis(out, shortlist, high + (high - low) + 1.0 + scaled, axis=1)
    return out


def two_stage(
    coarse: np.ndarray,
    k: int,
    rescore: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, int]:
    """Re-rank each row's top-``k`` of ``coarse`` (Q, N) with ``rescore(rows, cols) -> scores`` (flat pair
    lists); returns (the merged score matrix, the number of pairs re-scored)."""
    q, n = coarse.shape
    k = min(k, n)
    shortlist = np.argsort(-coarse, axis=1, kind="stable")[:, :k]
    rows = np.repeat(np.arange(q), k)
    fine = np.asarray(rescore(rows, shortlist.ravel()), dtype=np.float64).reshape(q, k)
    return merge_rerank(coarse, shortlist, fine), q * k


__all__ = ["FAISS_MIN_GALLERY", "INDEXES", "dual_softmax", "merge_rerank", "top_k", "two_stage"]
