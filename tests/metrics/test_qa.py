"""QA accuracy over the full official test size, per question type, top-k, and multiple choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.metrics import qa

ANSWERS = {"q1": "dog", "q2": "cooking", "q3": "two", "q4": "ice cream"}


def test_accuracy_counts_the_full_official_test_set():
    predictions = {"q1": "Dog ", "q2": "cooking", "q3": "three"}  # q4 missing (e.g. unrepresentable)
    assert qa.accuracy(predictions, ANSWERS) == 50.0  # 2 correct of the 4 items given
    assert qa.accuracy(predictions, ANSWERS, size_test=10) == 20.0  # 6 official questions absent entirely
    assert qa.accuracy(predictions, ANSWERS, size_test=3) == 50.0  # size_test below the items given: max()
    report = qa.qa_report(predictions, ANSWERS, size_test=10)
    assert report == {
        "acc": 20.0,
        "acc_given": 50.0,
        "correct": 2.0,
        "n_items": 4.0,
        "missing": 1.0,
        "denominator": 10.0,
    }


def test_violet_issue_8_filtered_vs_full_test_set():
    """Scoring only the questions the model can answer inflates accuracy (pytorch_violet #8)."""
    official = {f"q{i}": "yes" if i < 90 else "rare answer" for i in range(100)}
    kept = {i: a for i, a in official.items() if a == "yes"}  # the reference's filtered test set
    predictions = {i: ("yes" if int(i[1:]) % 2 == 0 else "no") for i in kept}  # 45 of 90 right
    assert qa.accuracy(predictions, kept) == 50.0  # the inflated number
    assert qa.accuracy(predictions, kept, size_test=100) == 45.0  # the honest one
    assert qa.accuracy(predictions, official) == 45.0  # same, from the full ground truth


def test_none_int_and_top_k_predictions():
    assert qa.accuracy({"a": None, "b": 3}, {"a": "x", "b": 3}) == 50.0
    ranked = {
        "q1": ["cat", "dog"],
        "q2": ["baking", "frying", "boiling", "grilling", "cooking", "x"],
        "q3": ("two",),
        "q4": [],
    }
    assert qa.accuracy(ranked, ANSWERS, k=1) == 25.0
    assert qa.accuracy(ranked, ANSWERS, k=2) == 50.0
    assert qa.accuracy(ranked, ANSWERS, k=5) == 75.0
    assert qa.accuracy({"q1": np.int64(1)}, {"q1": 1}) == 100.0


def test_accuracy_by_type():
    types = {"q1": "what", "q2": "what", "q3": "how many", "q4": "what"}
    predictions = {"q1": "dog", "q2": "singing", "q3": "two"}
    by_type = qa.accuracy_by_type(predictions, ANSWERS, types)
    assert by_type == {"how many": 100.0, "what": pytest.approx(100 / 3)}
    with pytest.raises(ValueError, match="no question type"):
        qa.accuracy_by_type(predictions, ANSWERS, {"q1": "what"})


def test_mc_accuracy():
    scores = np.array(
        [
            [0.1, 0.7, 0.2, 0.0, 0.0],  # → 1
            [0.3, 0.3, 0.1, 0.2, 0.1],  # tie → first option, 0
            [0.0, 0.0, 0.0, 0.0, 0.9],  # → 4
        ]
    )
    assert qa.mc_accuracy(scores, [1, 1, 4]) == pytest.approx(200 / 3)
    assert qa.mc_accuracy(torch.tensor(scores), [1, 0, 4]) == 100.0
    assert qa.mc_accuracy(scores, [1, 0, 4], size_test=4) == 75.0
    with pytest.raises(ValueError, match="option indices"):
        qa.mc_accuracy(scores, [1, 0, 5])
    with pytest.raises(ValueError, match="must be"):
        qa.mc_accuracy(scores, [1, 0])


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="absent from the ground truth"):
        qa.accuracy({"q9": "dog"}, ANSWERS)
    with pytest.raises(ValueError, match="size_test=0"):
        qa.accuracy({}, ANSWERS, size_test=0)
    with pytest.raises(ValueError, match="nothing to score"):
        qa.accuracy({}, {})
    with pytest.raises(ValueError, match="k >= 1"):
        qa.accuracy({}, ANSWERS, k=0)
