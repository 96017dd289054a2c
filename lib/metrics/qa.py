"""Question-answering accuracy over the FULL official test set, per question type, and multiple choice.

VIOLET's original open-ended QA evaluation dropped test questions whose answer was outside its answer
vocabulary (MSVD-QA: 11,983 of 13,157 kept), inflating accuracy (pytorch_violet issues #6/#8; the
maintainer confirmed it). Here every official test item counts:

    accuracy = correct / max(size_test, n_items)

where ``n_items`` is the number of ground-truth items given and ``size_test`` the official test-set size
(e.g. 13,157 for MSVD-QA). Items absent from the predictions, predicted ``None`` (unanswerable), or not
representable by the model are wrong, and items missing from the ground truth file itself are covered by
``size_test``. This equals the reference's "adjusted" accuracy ``acc × n_items / size_test``.

Answers are compared after :func:`normalize_answer` (strings stripped and lower-cased, as the uncased
BERT vocabulary produces them; other values, e.g. class indices, compared as they are).
Accuracies are percentages (0–100).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

Answer = str | int | None
"""One predicted answer, or a ranked list (best first) for top-k accuracy."""


def normalize_answer(answer: object) -> object:
    """Strings: stripped and lower-cased; anything else unchanged."""
    return answer.strip().lower() if isinstance(answer, str) else answer


def is_correct(prediction: Answer | Sequence[Answer], answer: object, k: int = 1) -> bool:
    """Whether ``answer`` is the prediction, or among the first ``k`` of a ranked list of predictions."""
    if prediction is None:
        return False
    ranked = list(prediction)[:k] if isinstance(prediction, list | tuple) else [prediction]
    target = normalize_answer(answer)
    return any(normalize_answer(p) == target for p in ranked)


def accuracy(
    predictions: Mapping[Hashable, Answer | Sequence[Answer]],
    answers: Mapping[Hashable, object],
    size_test: int | None = None,
    k: int = 1,
) -> float:
    """Top-``k`` accuracy (percent) over ``max(size_test, len(answers))`` items (see the module docstring).

    ``predictions`` maps item id → answer (or ranked answers); ``answers`` maps item id → ground truth.
    A prediction for an id that is not in ``answers`` is an error (mismatched files / duplicated eval).
    """
    return qa_report(predictions, answers, size_test, k)["acc"]


def qa_report(
    predictions: Mapping[Hashable, Answer | Sequence[Answer]],
    answers: Mapping[Hashable, object],
    size_test: int | None = None,
    k: int = 1,
) -> dict[str, float]:
    """``acc`` plus the counts behind it: ``correct``, ``n_items``, ``missing`` (no prediction),
    ``denominator`` = max(size_test, n_items), and ``acc_given`` (accuracy over the items given only)."""
    unknown = [i for i in predictions if i not in answers]
    if unknown:
        raise ValueError(
            f"{len(unknown)} predictions have ids absent from the ground truth, e.g. "
            f"{unknown[:5]}; predictions and answers must come from the same split"
        )
    if size_test is not None and size_test < 1:
        raise ValueError(f"size_test={size_test}; give the official number of test questions or None")
    if k < 1:
        raise ValueError(f"k={k}; top-k accuracy needs k >= 1")
    correct = sum(is_correct(predictions.get(i), a, k) for i, a in answers.items())
    n_items = len(answers)
    denominator = max(size_test or 0, n_items)
    if denominator == 0:
        raise ValueError("no ground-truth items and no size_test: nothing to score")
    return {
        "acc": 100.0 * correct / denominator,
        "acc_given": 100.0 * correct / n_items if n_items else 0.0,
        "correct": float(correct),
        "n_items": float(n_items),
        "missing": float(sum(i not in predictions for i in answers)),
        "denominator": float(denominator),
    }


def accuracy_by_type(
    predictions: Mapping[Hashable, Answer | Sequence[Answer]],
    answers: Mapping[Hashable, object],
    question_types: Mapping[Hashable, str],
    k: int = 1,
) -> dict[str, float]:
    """Accuracy (percent) per question type (e.g. what/who/how for MSRVTT-QA), over the ground-truth
    items of each type (no official per-type sizes exist, so ``size_test`` does not apply here)."""
    untyped = [i for i in answers if i not in question_types]
    if untyped:
        raise ValueError(f"{len(untyped)} ground-truth items have no question type, e.g. {untyped[:5]}")
    totals: dict[str, list[int]] = {}
    for i, a in answers.items():
        hit_total = totals.setdefault(question_types[i], [0, 0])
        hit_total[0] += is_correct(predictions.get(i), a, k)
        hit_total[1] += 1
    return {t: 100.0 * hit / total for t, (hit, total) in sorted(totals.items())}


def mc_accuracy(option_scores, answers: Sequence[int], size_test: int | None = None) -> float:
    """Multiple-choice accuracy (percent): arg-max over options of ``option_scores`` (n, O) (ties → the
    first option) against the correct indices ``answers`` (n,), over ``max(size_test, n)`` items."""
    if hasattr(option_scores, "detach"):
        option_scores = option_scores.detach().float().cpu().numpy()
    scores = np.asarray(option_scores, dtype=np.float64)
    target = np.asarray(answers, dtype=np.int64)
    if scores.ndim != 2 or target.shape != (scores.shape[0],):
        raise ValueError(f"option_scores {scores.shape} must be (n, n_options), answers {target.shape} (n,)")
    if target.size and (target.min() < 0 or target.max() >= scores.shape[1]):
        raise ValueError(f"answers must be option indices in 0..{scores.shape[1] - 1}")
    chosen = scores.argmax(axis=1)
    predictions = dict(enumerate(chosen.tolist()))
    return accuracy(predictions, dict(enumerate(target.tolist())), size_test)
