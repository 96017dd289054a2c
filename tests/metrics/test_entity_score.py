"""FAVDBench's EntityScore offline (Pattern POS tags, Porter stems, a packaged text encoder) and the clear
refusal of AudioScore."""

from __future__ import annotations

import pytest

from lib.metrics.entity_score import AudioScoreUnavailable, EntityScorer, audio_score, entity_score

# FAVDBench's own example (Metrics/EntityScore/score.py, test_entity_score)
PREDICTION = (
    "on stage a man speaks. on stage a man speaking had a white head a black suit a white shirt and a red "
    "tie. behind the man is a white wall. in front of the man is a black microphone. the man speaks with a."
)
REFERENCE = (
    "inside a man speaks into a microphone. a speech is being delivered by a man with white and black hair "
    "on his temples a black suit a white shirt and a tie with light and blue and white diagonal stripes. the "
    "man is backed by a sizable red wall. the man is in front of two microphones. he has a rhythm to his "
    "speech."
)


@pytest.fixture(scope="module")
def scorer(minilm_dir):
    return EntityScorer(minilm_dir)


def test_nouns_are_tagged_and_porter_stemmed(scorer):
    assert scorer.nouns(PREDICTION) == [
        "front",
        "head",
        "man",
        "microphon",
        "shirt",
        "stage",
        "suit",
        "tie",
        "wall",
    ]
    assert {"microphon", "speech", "stripe", "templ"} <= set(scorer.nouns(REFERENCE))  # plurals stemmed
    assert scorer.nouns("two dogs bark loudly at a high pitch") == ["bark", "dog", "pitch"]


def test_entity_score_recall_similarity_and_skipped_items(scorer):
    pred, ref = scorer.nouns(PREDICTION), scorer.nouns(REFERENCE)
    recall = sum(n in ref for n in pred) / len(ref)
    assert recall == pytest.approx(7 / 13)  # front man microphon shirt suit tie wall, of 13 reference nouns
    c = scorer.comprehensiveness(pred, ref)
    assert 0.5 < c <= 1.0 and scorer.comprehensiveness(ref, ref) == pytest.approx(1.0)
    es = scorer.score(PREDICTION, REFERENCE)
    assert es == pytest.approx(2 * c * (recall + 1e-4) / (c + recall + 1e-4))
    assert scorer.score(REFERENCE, REFERENCE) == pytest.approx(1.0, abs=1e-3)
    assert scorer.score("a red circle beeps", REFERENCE) < 0.01  # no shared noun: R = 0
    out = entity_score({"a": PREDICTION, "b": "is it?", "c": REFERENCE}, {"a": REFERENCE, "b": REFERENCE,
                        "c": [PREDICTION, REFERENCE]}, scorer)  # fmt: skip
    assert out["n_scored"] == 2 and out["n_skipped"] == 1  # "is it?" has no noun
    assert out["EntityScore"] == pytest.approx((es + scorer.score(REFERENCE, REFERENCE)) / 2)
    with pytest.raises(KeyError, match="'x' has no reference"):
        entity_score({"x": PREDICTION}, {}, scorer)


def test_audio_score_is_refused_not_faked():
    with pytest.raises(AudioScoreUnavailable, match="TriLip"):
        audio_score({"a": "a dog barks"}, {"a": "a dog barks"})
