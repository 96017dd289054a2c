"""COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) with a Java-free fallback.

:func:`coco_scores` is the entry point. With Java it runs the standard toolkit (``pycocoevalcap``: Stanford
PTB tokenizer, then Bleu, Meteor, Rouge, Cider — the numbers papers report). Without a working ``java``
(or when the Java tools fail) it warns and falls back to this module's pure-Python implementation:

* :func:`ptb_like_tokenize` — lower-cases, splits clitics ("don't" → "do n't", "man's" → "man 's"),
  separates and drops the punctuation the toolkit drops (. , ? ! : ; - -- ... quotes), keeps numbers such
  as "2.5"/"10:30", hyphenated words and abbreviations ("u.s.", "mr."), and spells brackets "-lrb-" etc.
  (the toolkit's punctuation list is upper-case, so after lower-casing it keeps them). It reproduces the
  PTB tokenizer on ordinary captions; rare constructs (currency symbols, "<tags>") can differ.
* :func:`bleu` — corpus BLEU with the "closest" reference length and coco-caption's 1e-15/1e-9 guards
  (so a corpus without any matching 4-gram gets a tiny non-zero BLEU-4, exactly like the toolkit).
* :func:`rouge_l` — per-caption ROUGE-L (LCS F-measure, beta 1.2, best precision and best recall over the
  references taken separately), averaged.
* :func:`cider_d` — CIDEr-D as in the toolkit's ``Cider``: TF-IDF n-gram vectors (n = 1..4) with document
  frequencies from the references of the evaluated set, clipped similarity ``min(h, r) * r``, Gaussian
  length penalty sigma = 6, mean over n and references, × 10. Like the toolkit, the length in the penalty
  is the caption's bigram count (words − 1: the same differences as word counts whenever the score is
  not 0 anyway).

METEOR has no pure-Python equivalent here (it needs the Java paraphrase tables), so it is present only
when Java works. Given the same tokens, the fallback's BLEU/ROUGE-L/CIDEr equal the toolkit's to
floating-point precision. Scores are on the toolkit's scale (fractions; CIDEr can exceed 1).
"""

from __future__ import annotations

import logging
import math
import re
import shutil
import subprocess
import warnings
from collections import Counter
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache

logger = logging.getLogger(__name__)

BLEU_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4")
METRIC_KEYS = (*BLEU_KEYS, "METEOR", "ROUGE_L", "CIDEr")
BACKENDS = ("auto", "pycocoevalcap", "python")

Tokens = list[str]


def coco_scores(
    predictions: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    backend: str = "auto",
) -> dict[str, float]:
    """Caption metrics for ``predictions`` (id → caption) against ``references`` (id → captions).

    Returns ``Bleu_1..Bleu_4``, ``METEOR`` (Java only), ``ROUGE_L`` and ``CIDEr``. ``backend``: "auto"
    (pycocoevalcap when ``java`` runs, else the pure-Python fallback with a warning), "pycocoevalcap"
    (fail if Java is unusable), or "python".
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r}; choose one of {BACKENDS}")
    _validate(predictions, references)
    if backend == "python":
        return python_scores(predictions, references)
    if not java_available():
        if backend == "pycocoevalcap":
            raise RuntimeError(
                "backend='pycocoevalcap' needs a working `java` (Java 8+) on PATH; "
                "install one or use backend='python' (no METEOR)"
            )
        _warn_fallback("no working `java` on PATH")
        return python_scores(predictions, references)
    try:
        return _pycocoevalcap_scores(predictions, references)
    except (OSError, subprocess.SubprocessError, RuntimeError, ValueError) as err:
        if backend == "pycocoevalcap":
            raise
        _warn_fallback(f"the Java caption tools failed ({type(err).__name__}: {err})")
        return python_scores(predictions, references)


def python_scores(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> dict:
    """BLEU-1..4, ROUGE-L and CIDEr-D without Java (see the module docstring)."""
    _validate(predictions, references)
    ids = list(references)
    hyps = [ptb_like_tokenize(predictions[i]) for i in ids]
    refs = [[ptb_like_tokenize(r) for r in references[i]] for i in ids]
    scores = dict(zip(BLEU_KEYS, bleu(hyps, refs)))
    return {**scores, "ROUGE_L": rouge_l(hyps, refs), "CIDEr": cider_d(hyps, refs)}


# ----------------------------------------------------------------------------------------------------------
# Tokenization

_PTB_DROPPED = {"''", "'", "``", "`", '"', ".", "?", "!", ",", ":", "-", "--", "...", ";"}
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "{": "-lcb-", "}": "-rcb-", "[": "-lsb-", "]": "-rsb-"}
_CLITIC = re.compile(r"(?<=\w)(n't|'s|'re|'ve|'ll|'d|'m)\b")
_SPLIT_WORD = re.compile(r"\b(can)(not)\b|\b(gon|got|wan)(na)\b")
_TOKEN = re.compile(
    r"""
      \b(?:mr|mrs|ms|dr|st|jr|sr|vs|etc|prof|mt)\.   # abbreviations keeping their period
    | (?:[^\W\d_]\.){2,}                             # initialisms: u.s., e.g.
    | \d+(?:[.,:/]\d+)+                              # numbers: 2.5  1,000  10:30  24/7
    | n't | '(?:s|re|ve|ll|d|m)\b | 'n' | '\d\ds\b    # clitics, 'n', '90s
    | [\w@]+(?:[-'/&.][\w@]+)*                       # words: t-shirt, o'clock, a/b, at&t
    | \.\.\. | -- | [?!]+                            # multi-character punctuation
    | \S                                             # any other symbol on its own
    """,
    re.VERBOSE,
)


def ptb_like_tokenize(text: str) -> Tokens:
    """Lower-cased tokens as the coco-caption PTB tokenizer + punctuation filter would give them."""
    text = _CLITIC.sub(r" \1", text.lower())
    text = _SPLIT_WORD.sub(lambda m: " ".join(g for g in m.groups() if g), text)
    tokens = (_BRACKETS.get(t, t) for t in _TOKEN.findall(text))
    return [t for t in tokens if t not in _PTB_DROPPED]


# ----------------------------------------------------------------------------------------------------------
# Metrics on tokenized captions: hyps[i] is a token list, refs[i] a list of token lists


def _ngrams(tokens: Tokens, n: int) -> Counter:
    """Counts of all 1..n-grams (as tuples)."""
    return Counter(tuple(tokens[i : i + k]) for k in range(1, n + 1) for i in range(len(tokens) - k + 1))


def bleu(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (coco-caption's definition: closest reference length, clipped n-gram counts)."""
    tiny, small = 1e-15, 1e-9
    correct, guess = [0] * n, [0] * n
    hyp_len = ref_len = 0
    for hyp, hyp_refs in zip(hyps, refs):
        max_ref_counts: Counter = Counter()
        for ref in hyp_refs:
            max_ref_counts |= _ngrams(ref, n)
        for gram, count in _ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(count, max_ref_counts[gram])
        for k in range(n):
            guess[k] += max(0, len(hyp) - k)
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in hyp_refs)[1]
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (hyp_len + tiny) / (ref_len + small)
    penalty = math.exp(1 - 1 / ratio) if ratio < 1 else 1.0
    return [s * penalty for s in scores]


def _lcs_length(a: Tokens, b: Tokens) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], beta: float = 1.2) -> float:
    """Mean per-caption ROUGE-L F-measure (best precision and best recall over references)."""
    total = 0.0
    for hyp, hyp_refs in zip(hyps, refs):
        lcs = [_lcs_length(ref, hyp) for ref in hyp_refs]
        precision = max((m / len(hyp) if hyp else 0.0) for m in lcs)
        recall = max((m / len(ref) if ref else 0.0) for m, ref in zip(lcs, hyp_refs))
        if precision > 0 and recall > 0:
            total += (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    return total / len(hyps)


def cider_d(
    hyps: Sequence[Tokens], refs: Sequence[Sequence[Tokens]], n: int = 4, sigma: float = 6.0
) -> float:
    """CIDEr-D of the corpus (coco-caption's ``Cider``; see the module docstring)."""
    ref_counts = [[_ngrams(r, n) for r in hyp_refs] for hyp_refs in refs]
    doc_freq: Counter = Counter()
    for counts in ref_counts:
        doc_freq.update(set().union(*counts))
    log_n_docs = math.log(len(hyps))

    def tfidf(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        for gram, tf in counts.items():
            vec[len(gram) - 1][gram] = tf * (log_n_docs - math.log(max(1.0, doc_freq[gram])))
        norms = [math.sqrt(sum(w * w for w in v.values())) for v in vec]
        n_bigrams = sum(tf for gram, tf in counts.items() if len(gram) == 2)
        return vec, norms, n_bigrams

    def similarity(hyp: tuple, ref: tuple) -> float:
        (h_vec, h_norm, h_len), (r_vec, r_norm, r_len) = hyp, ref
        penalty = math.exp(-((h_len - r_len) ** 2) / (2 * sigma**2))
        total = 0.0
        for k in range(n):
            dot = sum(min(w, r_vec[k].get(g, 0.0)) * r_vec[k].get(g, 0.0) for g, w in h_vec[k].items())
            if h_norm[k] != 0 and r_norm[k] != 0:
                dot /= h_norm[k] * r_norm[k]
            total += dot * penalty
        return total / n

    scores = []
    for hyp, counts in zip(hyps, ref_counts):
        h = tfidf(_ngrams(hyp, n))
        scores.append(10.0 * sum(similarity(h, tfidf(c)) for c in counts) / len(counts))
    return sum(scores) / len(scores)


# ----------------------------------------------------------------------------------------------------------
# The Java toolkit


def java_available() -> bool:
    """Whether a ``java`` on PATH starts (checked once per java binary)."""
    java = shutil.which("java")
    return java is not None and _java_runs(java)


@lru_cache(maxsize=4)
def _java_runs(java: str) -> bool:
    try:
        return subprocess.run([java, "-version"], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _pycocoevalcap_scores(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _ptb_tokenize(predictions, references)
    scores = dict(zip(BLEU_KEYS, Bleu(4).compute_score(gts, res, verbose=0)[0]))
    try:
        with _meteor() as meteor:
            scores["METEOR"] = meteor.compute_score(gts, res)[0]
    except (OSError, ValueError) as err:
        message = f"METEOR failed ({type(err).__name__}: {err}); reporting the other metrics without it"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        logger.warning(message)
    scores["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    scores["CIDEr"] = Cider().compute_score(gts, res)[0]
    return {k: float(scores[k]) for k in METRIC_KEYS if k in scores}


def _ptb_tokenize(
    predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> tuple[dict, dict]:
    """References and predictions through ONE run of the Stanford PTB tokenizer (one JVM start)."""
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    captions = {("ref", i): [{"caption": c} for c in refs] for i, refs in references.items()}
    captions.update({("hyp", i): [{"caption": predictions[i]}] for i in references})
    tokenized = PTBTokenizer().tokenize(captions)
    if any(len(tokenized.get(key, ())) != len(value) for key, value in captions.items()):
        raise RuntimeError("the PTB tokenizer returned fewer lines than captions (java failed?)")
    gts = {i: tokenized[("ref", i)] for i in references}
    res = {i: tokenized[("hyp", i)] for i in references}
    return gts, res


@contextmanager
def _meteor() -> Iterator:
    """pycocoevalcap's Meteor (a JVM subprocess), always stopped afterwards, also when scoring fails
    (its own ``__del__`` would otherwise wait forever on a lock left held by the failure)."""
    from pycocoevalcap.meteor.meteor import Meteor

    meteor = Meteor()
    try:
        yield meteor
    finally:
        if meteor.lock.locked():
            meteor.lock.release()
        process = meteor.meteor_p
        process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()


def _warn_fallback(reason: str) -> None:
    message = f"{reason}: caption metrics from the pure-Python fallback (BLEU, ROUGE-L, CIDEr; no METEOR)"
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    logger.warning(message)


def _validate(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]) -> None:
    missing = [i for i in references if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        raise ValueError(
            f"predictions and references must have the same ids: {len(missing)} references "
            f"lack a prediction (e.g. {missing[:3]}), {len(extra)} predictions lack references "
            f"(e.g. {extra[:3]})"
        )
    if not references:
        raise ValueError("no captions to score (empty references)")
    for i, refs in references.items():
        if isinstance(refs, str) or not refs or not all(isinstance(r, str) for r in refs):
            raise ValueError(f"references[{i!r}] must be a non-empty list of strings, got {refs!r:.80}")
        if not isinstance(predictions[i], str):
            raise ValueError(f"predictions[{i!r}] must be a string, got {type(predictions[i]).__name__}")
