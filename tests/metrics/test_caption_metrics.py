"""Caption metrics: the pure-Python fallback against pycocoevalcap, hand-checked values, Java detection."""

from __future__ import annotations

import logging
import math
import os
import stat

import pytest

from lib.metrics import caption as C

# MSR-VTT-like captions with casing, punctuation, clitics, numbers and brackets; several references each.
REFERENCES = {
    "video7010": [
        "A man is playing a guitar on stage.",
        "a guitarist performs a song",
        "Someone plays guitar.",
    ],
    "video7011": [
        "A woman slices 3 tomatoes in a kitchen.",
        "a lady is cutting vegetables",
        "Someone cuts tomatoes, onions and peppers.",
    ],
    "video7012": ["Two dogs run across the grass.", "dogs are playing in a park", "a dog chases another dog"],
    "video7013": [
        "A news anchor talks about the U.S. election.",
        "a man reports the news",
        "A reporter is speaking on TV.",
    ],
    "video7014": ["A cartoon cat chases a mouse!", "cartoon characters are running", "tom and jerry cartoon"],
    "video7015": [
        "People are dancing at a party.",
        "a group of people dance to music",
        "Men and women dance (in a club).",
    ],
    "video7016": ["A car drives down a busy street at night.", "a car is driving", "traffic on a city road"],
    "video7017": [
        "A chef explains how to cook pasta.",
        "someone is cooking in a kitchen",
        "a man shows how to make a dish",
    ],
    "video7018": ["Kids are swimming in a pool.", "children play in the water", "a boy jumps into a pool"],
    "video7019": ["A man's T-shirt is being folded.", "someone folds clothes", "a person is folding a shirt"],
    "video7020": ["A soccer player scores a goal!", "a football match", "players are playing soccer"],
    "video7021": ["It's a video game; a character runs.", "a person plays a video game", "gameplay footage"],
}
PREDICTIONS = {
    "video7010": "a man is playing a guitar",
    "video7011": "A woman is cutting tomatoes in the kitchen.",
    "video7012": "two dogs are playing in the grass",
    "video7013": "a man is talking about the news",
    "video7014": "a cartoon cat is running",
    "video7015": "people are dancing",
    "video7016": "a car is driving down the street",
    "video7017": "a man is cooking pasta",
    "video7018": "a boy is swimming in a pool",
    "video7019": "a person is folding a shirt",
    "video7020": "a soccer player scores a goal",
    "video7021": "a person is playing a video game",
}
NON_METEOR = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

needs_java = pytest.mark.skipif(not C.java_available(), reason="no working `java` on PATH")


@pytest.fixture(scope="module")
def toolkit_scores() -> dict[str, float]:
    """The only pycocoevalcap run (one PTB tokenizer JVM + one METEOR JVM, ~6 s); "auto" must pick it."""
    if not C.java_available():
        pytest.skip("no working `java` on PATH")
    return C.coco_scores(PREDICTIONS, REFERENCES, backend="auto")


@needs_java
def test_fallback_agrees_with_pycocoevalcap(toolkit_scores):
    fallback = C.coco_scores(PREDICTIONS, REFERENCES, backend="python")
    assert set(toolkit_scores) == set(C.METRIC_KEYS)  # METEOR present: Java was used
    assert set(fallback) == set(NON_METEOR)
    for key in NON_METEOR:
        # identical tokens → identical arithmetic; only float summation order differs
        assert fallback[key] == pytest.approx(toolkit_scores[key], abs=1e-9), key
    assert 0.2 < toolkit_scores["METEOR"] < 0.5
    assert 0.5 < toolkit_scores["CIDEr"] < 3 and 0.4 < toolkit_scores["Bleu_1"] < 1


@needs_java
def test_ptb_like_tokenizer_matches_the_stanford_tokenizer():
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = (
        [c for refs in REFERENCES.values() for c in refs]
        + list(PREDICTIONS.values())
        + [
            "Don't stop: the man's T-shirt (red) costs $5.50, right?",
            "Mr. Smith met Dr. Who at 3:00pm.",
            "I can't, they're gonna -- well... \"quoted\" 1,000 ppl; e.g. x-ray!",
            "Really?! rock 'n' roll in the '90s",
            "  two   spaces\tand a tab  ",
            "",
        ]
    )
    ptb = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    for i, sentence in enumerate(sentences):
        assert C.ptb_like_tokenize(sentence) == ptb[i][0].split(), sentence


def tokenized_set():
    hyps = [C.ptb_like_tokenize(PREDICTIONS[i]) for i in REFERENCES]
    refs = [[C.ptb_like_tokenize(r) for r in REFERENCES[i]] for i in REFERENCES]
    # edge cases: an empty caption, a one-word caption, a caption sharing no 4-gram with its references,
    # a caption repeating an n-gram more often than any reference (clipped counts / clipped tf-idf)
    hyps += [[], ["dog"], ["completely", "unrelated", "words", "here"], ["a", "dog", "a", "dog", "a", "dog"]]
    refs += [
        [["a", "cat"]],
        [["a", "dog", "barks"], ["dog"]],
        [["a", "man", "is", "walking", "home"]],
        [["a", "dog", "runs"], ["the", "dog", "and", "a", "dog"]],
    ]
    return hyps, refs


def test_scorers_equal_pycocoevalcaps_python_scorers_on_the_same_tokens():
    """No Java needed: pycocoevalcap's Bleu/Rouge/Cider are pure Python, fed the same tokens."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    hyps, refs = tokenized_set()
    res = {i: [" ".join(h)] for i, h in enumerate(hyps)}
    gts = {i: [" ".join(r) for r in rs] for i, rs in enumerate(refs)}
    expected_bleu = Bleu(4).compute_score(gts, res, verbose=0)[0]
    assert C.bleu(hyps, refs) == pytest.approx(expected_bleu, abs=1e-12)
    assert C.rouge_l(hyps, refs) == pytest.approx(Rouge().compute_score(gts, res)[0], abs=1e-12)
    assert C.cider_d(hyps, refs) == pytest.approx(Cider().compute_score(gts, res)[0], abs=1e-12)


def test_hand_checked_values():
    # identical captions: every n-gram matches and lengths agree
    references = {1: ["a man plays a guitar", "someone sings"], 2: ["dogs run on grass"]}
    same = C.coco_scores({1: "A man plays a guitar.", 2: "Dogs run on grass"}, references, backend="python")
    assert [same[k] for k in C.BLEU_KEYS] == pytest.approx([1.0] * 4, abs=1e-9)
    assert same["ROUGE_L"] == pytest.approx(1.0)
    # two items with disjoint vocabularies and one identical reference each: idf = log 2 for every
    # n-gram, every cosine is 1, no length penalty → 10 × mean of four ones
    abcd, efgh = ["a", "b", "c", "d"], ["e", "f", "g", "h"]
    assert C.cider_d([abcd, efgh], [[abcd], [efgh]]) == pytest.approx(10.0)
    # "the cat sat" vs "the cat sat on the mat": all n-grams match, brevity penalty exp(1 - 6/3)
    b = C.bleu([["the", "cat", "sat"]], [[["the", "cat", "sat", "on", "the", "mat"]]])
    assert b[:3] == pytest.approx([math.exp(-1)] * 3, rel=1e-6)
    # LCS("a b c", "a c d e") = 2: P = 2/3, R = 1/2, F = (1 + 1.44) P R / (R + 1.44 P)
    assert C.rouge_l([["a", "b", "c"]], [[["a", "c", "d", "e"]]]) == pytest.approx(
        2.44 * (2 / 3) * 0.5 / (0.5 + 1.44 * 2 / 3)
    )
    assert C.rouge_l([[]], [[["a"]]]) == 0.0


def fake_java(tmp_path, exit_code: int):
    """A directory holding only a `java` that exits with `exit_code` (a broken Java install)."""
    java = tmp_path / "java"
    java.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return str(tmp_path)


@pytest.mark.parametrize("broken", ["missing", "fails"])
def test_falls_back_with_a_warning_without_working_java(monkeypatch, tmp_path, caplog, broken):
    path = str(tmp_path) if broken == "missing" else fake_java(tmp_path, 1)
    monkeypatch.setenv("PATH", path)
    assert not C.java_available()
    with (
        caplog.at_level(logging.WARNING, logger="lib.metrics.caption"),
        pytest.warns(RuntimeWarning, match="pure-Python fallback"),
    ):
        scores = C.coco_scores(PREDICTIONS, REFERENCES)
    assert "pure-Python fallback" in caplog.text
    assert scores == C.python_scores(PREDICTIONS, REFERENCES)
    assert "METEOR" not in scores
    with pytest.raises(RuntimeError, match="needs a working `java`"):
        C.coco_scores(PREDICTIONS, REFERENCES, backend="pycocoevalcap")
    assert os.environ["PATH"] == path


def test_rejects_mismatched_or_malformed_input():
    with pytest.raises(ValueError, match="1 references lack a prediction"):
        C.coco_scores({"a": "x"}, {"a": ["x"], "b": ["y"]}, backend="python")
    with pytest.raises(ValueError, match="1 predictions lack references"):
        C.coco_scores({"a": "x", "c": "z"}, {"a": ["x"]}, backend="python")
    with pytest.raises(ValueError, match="non-empty list of strings"):
        C.coco_scores({"a": "x"}, {"a": "x"}, backend="python")
    with pytest.raises(ValueError, match="must be a string"):
        C.coco_scores({"a": ["x"]}, {"a": ["x"]}, backend="python")
    with pytest.raises(ValueError, match="backend="):
        C.coco_scores({"a": "x"}, {"a": ["x"]}, backend="java")
