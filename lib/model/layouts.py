"""Every task as masked-token prediction: pure functions that build token ids, attention masks and labels.

LAVENDER serves all tasks with ONE masked-language-model head: each task puts a ``[MASK]`` into the text
and supervises the vocabulary prediction there. This module builds those inputs (reference digest §1.7);
it knows nothing of models, datasets or training. All tensors are ``torch.long``.

Conventions
-----------
* ``labels`` hold :data:`IGNORE_INDEX` (-100, the default ``ignore_index`` of ``torch.nn.CrossEntropyLoss``)
  where nothing is supervised. The reference used -1; convert with ``labels.clamp(min=-1)`` if needed.
* ``mask`` is the text attention mask (1 = attend). ``[PAD]`` positions are 0; everything else is 1.
* ``mask_pos`` is the index of the (first) supervised ``[MASK]`` per row; with ``n_masks > 1`` the masks
  occupy ``mask_pos … mask_pos + n_masks - 1`` (:meth:`Layout.mask_index`).
* ``attn`` is the attention type the model must build ("full", or "seq2seq" for captioning);
  ``task`` is the task-token name of §1.10 ("vtm", "mc", "oe", "cap").

Sequence lengths (``L``) per layout, with the reference's for comparison:

==================  =========================================================  ==============  =============
layout              tokens                                                     L (here)        L (reference)
==================  =========================================================  ==============  =============
vtm / retrieval_mc  ``[CLS] w… [SEP] [PAD]… [MASK]``                            size_txt + 1    size_txt + 1
open_qa             ``[CLS] q… answer : [MASK] [SEP] [PAD]…``                   size_txt        size_txt + 5
fill_blank          ``[CLS] … [MASK] … [SEP] [PAD]…``                           size_txt        size_txt
multiple_choice     ``[CLS] q [SEP] option 0: a0 … [MASK] [SEP] [PAD]…``         size_txt + 3    size_txt + 3
caption_train       ``[CLS] w… [SEP] [PAD]…`` with ~p of the tokens masked      size_txt        size_txt
caption_lm          ``[CLS] w… [SEP] [PAD]…``, labels = the next token          size_txt        (AVLFormer)
caption_step        ``prefix… [MASK]`` (no padding)                            len(prefix)+1   same
==================  =========================================================  ==============  =============

``open_qa`` truncates the question so the WHOLE sequence fits ``size_txt`` (the reference kept up to
``size_txt - 1`` question pieces and grew to ``size_txt + 5``). ``multiple_choice`` keeps the reference's
geometry exactly: the joined question/options text is cut to ``size_txt - 1`` wordpieces (from the end, so
very long inputs can lose their last options, as in the reference) and padded to ``size_txt + 3``.

Open-ended answers of several wordpieces
----------------------------------------
The reference supervises one ``[MASK]`` with the answer's vocabulary id, so answers that are not ONE
wordpiece were silently unlearnable and always wrong. Here they are not dropped:
:func:`answer_candidates` splits an answer list into wordpieces, and :func:`open_qa` / :func:`fill_blank`
take ``n_masks``: a k-piece answer is placed on k consecutive ``[MASK]`` s (labels = its pieces). At eval,
run one layout per piece count k present in the answer list and score every k-piece candidate with
:func:`score_candidates` (mean log-probability per piece, so lengths compare); the arg-max over all
candidates is the prediction. Rows whose answer has a different piece count than ``n_masks`` get no label.
With the reference protocol (``n_masks=1``, arg-max over the full vocabulary) multi-piece answers are
counted wrong; :attr:`AnswerCandidates.n_multi` is the count to report alongside the accuracy.

True/false scoring
------------------
:func:`true_false_prob` is the 2-way softmax over the "true"/"false" logits (= sigmoid of their
difference): a probability for any logits. Rankings (retrieval, retrieval-style multiple choice) use its
log-odds, :func:`true_false_logodds`, which orders the same way but cannot round to a tie at 1.0.
:func:`true_false_ratio` is the reference's ``l_true / (l_true + l_false)`` on RAW logits, kept only to
reproduce published numbers: it is not monotone in the evidence (a negative or near-zero sum flips or
explodes it) and can rank candidates differently from the softmax.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

import torch

IGNORE_INDEX = -100
"""Label of unsupervised positions (``torch.nn.CrossEntropyLoss`` default). The reference used -1."""

TASK_TOKENS = {"vtm": 0, "mc": 1, "oe": 2, "cap": 3}
"""Task-token ids of ``emb_task`` (reference §1.4); the model adds the embedding, layouts name the task."""

PROMPTS = {
    "vtm": "is the video-text paired, true or false?",
    "retrieval_mc": "is the video-text matched, true or false?",
    "open_qa": "answer the question about the video.",
    "fill_blank": "fill in the mask to complete the sentence.",
    "multiple_choice": "which answer is correct, from [0, 1, 2, 3, 4]?",
    "caption": "write a description about the video.",
}
"""The reference's optional prompt texts (§1.6), keyed by layout; encoded as ``[CLS] prompt [SEP]``."""

MASK_MODES = ("mask", "bert")


@dataclass(frozen=True)
class Layout:
    """A batch of text inputs for the fusion model plus the MLM supervision.

    ``ids``, ``mask``, ``labels``: (B, L). ``mask_pos``: (B,) index of the first supervised ``[MASK]``,
    or None when the supervision is spread over many positions (MLM, caption training).
    """

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    mask_pos: torch.Tensor | None = None
    n_masks: int = 1
    attn: str = "full"
    task: str | None = None

    def mask_index(self) -> torch.Tensor:
        """(B, n_masks) positions of the supervised ``[MASK]`` s (consecutive from ``mask_pos``)."""
        if self.mask_pos is None:
            raise ValueError("this layout has no fixed [MASK] position (MLM-style); use labels != -100")
        return self.mask_pos[:, None] + torch.arange(self.n_masks, device=self.mask_pos.device)

    def to(self, device: torch.device | str) -> Layout:
        """A copy with every tensor moved to ``device``."""
        tensors = {f.name: getattr(self, f.name) for f in fields(self)}
        return replace(self, **{k: v.to(device) for k, v in tensors.items() if isinstance(v, torch.Tensor)})


# ----------------------------------------------------------------------------------------------------
# Token helpers


def true_false_ids(tok) -> tuple[int, int]:
    """Vocabulary ids of "true" and "false" (single wordpieces in bert-base-uncased)."""
    return _single_piece_id(tok, "true"), _single_piece_id(tok, "false")


def choice_ids(tok, n: int) -> list[int]:
    """Vocabulary ids of the digits "0" … "n-1", the labels of :func:`multiple_choice`."""
    if not 1 <= n <= 10:
        raise ValueError(f"choice_ids: n={n} options; digits 0-9 are single wordpieces, so 1 <= n <= 10")
    return [_single_piece_id(tok, str(i)) for i in range(n)]


def special_ids(tok) -> tuple[int, ...]:
    """Ids never masked by :func:`mlm_mask` (reference: [CLS], [SEP], [PAD], [MASK])."""
    return (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id)


def _single_piece_id(tok, word: str) -> int:
    pieces = tok(word, add_special_tokens=False)["input_ids"]
    if len(pieces) != 1:
        raise ValueError(f"{word!r} is not a single wordpiece of this tokenizer ({pieces}); use a BERT vocab")
    return pieces[0]


def _pieces(tok, texts: Sequence[str], what: str) -> list[list[int]]:
    """Wordpiece ids of each text, without special tokens (a literal "[MASK]"/"[SEP]" maps to its id)."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"{what}: expected a list of strings, got {type(texts).__name__} ({texts!r:.80})")
    if len(texts) == 0:
        return []
    return tok(list(texts), add_special_tokens=False)["input_ids"]


def _pack(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows to ``length``; the mask is 1 on the row tokens and 0 on padding."""
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


def _check_batch(what: str, n: int, **columns: Sequence | None) -> None:
    for name, col in columns.items():
        if col is not None and len(col) != n:
            raise ValueError(f"{what}: {name} has {len(col)} entries for {n} texts; give one per text")


def _need(what: str, size_txt: int, minimum: int) -> None:
    if size_txt < minimum:
        raise ValueError(f"{what}: size_txt={size_txt} is too small for this layout; it needs >= {minimum}")


def _answer_labels(
    tok, what: str, answers: Sequence[str] | None, n_masks: int, n: int
) -> list[list[int] | None]:
    """Per row: the answer's wordpieces if there are exactly ``n_masks`` of them, else None (unsupervised)."""
    if answers is None:
        return [None] * n
    _check_batch(what, n, answers=answers)
    return [p if len(p) == n_masks else None for p in _pieces(tok, answers, f"{what} answers")]


def _supervise(ids: torch.Tensor, mask_pos: torch.Tensor, n_masks: int, targets: list) -> torch.Tensor:
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, target in enumerate(targets):
        if target is not None:
            start = int(mask_pos[i])
            labels[i, start : start + n_masks] = torch.tensor(target, dtype=torch.long)
    return labels


# ----------------------------------------------------------------------------------------------------
# Video-text matching, retrieval, retrieval-style multiple choice


def vtm_pairs(n: int, n_neg: int, rng: random.Random) -> tuple[list[int], list[int], list[bool]]:
    """Matching pairs of a batch of ``n`` (video, text) samples: for each video i, (i, own text, True) then
    ``n_neg`` (i, text of another sample, False) - the rows of a :func:`vtm` layout."""
    video, text, matched = [], [], []
    n_neg = min(n_neg, n - 1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for j in [i, *rng.sample(others, n_neg)]:
            video.append(i)
            text.append(j)
            matched.append(j == i)
    return video, text, matched


def vtm(tok, texts: Sequence[str], size_txt: int, matched: Sequence[bool] | None = None) -> Layout:
    """``[CLS] w… [SEP] [PAD]…`` (length ``size_txt``, text truncated) then ONE ``[MASK]`` appended after
    the padding (position ``size_txt``, mask 1). Label there: "true" if matched else "false"."""
    _need("vtm", size_txt, 2)
    pieces = _pieces(tok, texts, "vtm")
    _check_batch("vtm", len(pieces), matched=matched)
    rows = [[tok.cls_token_id, *p[: size_txt - 2], tok.sep_token_id] for p in pieces]
    ids, mask = _pack(rows, size_txt, tok.pad_token_id)
    n = len(rows)
    ids = torch.cat([ids, torch.full((n, 1), tok.mask_token_id, dtype=torch.long)], dim=1)
    mask = torch.cat([mask, torch.ones((n, 1), dtype=torch.long)], dim=1)
    labels = torch.full_like(ids, IGNORE_INDEX)
    if matched is not None:
        true_id, false_id = true_false_ids(tok)
        labels[:, size_txt] = torch.tensor([true_id if m else false_id for m in matched], dtype=torch.long)
    return Layout(ids, mask, labels, torch.full((n,), size_txt, dtype=torch.long), task="vtm")


def plain_text(tok, texts: Sequence[str], size_txt: int) -> Layout:
    """``[CLS] w… [SEP] [PAD]…`` of length ``size_txt`` with no supervision: the text part of :func:`vtm` (its
    appended ``[MASK]`` dropped), the input of MTM and of the text embedding (contrastive alignment)."""
    base = vtm(tok, texts, size_txt)
    ids, mask = base.ids[:, :size_txt], base.mask[:, :size_txt]
    return Layout(ids, mask, torch.full_like(ids, IGNORE_INDEX))


def retrieval_mc(
    tok,
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    size_txt: int,
    answers: Sequence[int] | None = None,
) -> Layout:
    """Retrieval-style multiple choice (MSRVTT-MC, LSMDC-MC): each option becomes its own :func:`vtm`
    sequence of ``question + " " + option``, flattened row-major to B*O rows (reshape scores to (B, O));
    label "true" for the correct option, "false" for the others."""
    n_options = _n_options("retrieval_mc", questions, options, answers)
    texts = [f"{q} {o}".strip() for q, opts in zip(questions, options) for o in opts]
    matched = None if answers is None else [k == a for a in answers for k in range(n_options)]
    return vtm(tok, texts, size_txt, matched)


def _n_options(what: str, questions, options, answers) -> int:
    _check_batch(what, len(questions), options=options, answers=answers)
    counts = {len(o) for o in options}
    if len(counts) > 1:
        bad = next(i for i, o in enumerate(options) if len(o) != len(options[0]))
        raise ValueError(
            f"{what}: row {bad} has {len(options[bad])} options, row 0 has {len(options[0])}; "
            "every question needs the same number of options"
        )
    n_options = counts.pop() if counts else 0
    for i, a in enumerate(answers or []):
        if not 0 <= int(a) < n_options:
            raise ValueError(f"{what}: row {i} answer index {a} is outside 0..{n_options - 1}")
    return n_options


def true_false_prob(logits: torch.Tensor, true_id: int, false_id: int) -> torch.Tensor:
    """p(true) from MLM logits (..., V) at the [MASK]: 2-way softmax over {true, false} =
    ``sigmoid(l_true - l_false)``. Shape (...)."""
    logits = logits.float()
    return torch.sigmoid(logits[..., true_id] - logits[..., false_id])


def true_false_logodds(logits: torch.Tensor, true_id: int, false_id: int) -> torch.Tensor:
    """``log p(true) - log p(false) = l_true - l_false``: orders pairs exactly as :func:`true_false_prob` but
    never saturates (the sigmoid rounds to 1.0 in float32 past a margin of ~17, tying confident pairs)."""
    logits = logits.float()
    return logits[..., true_id] - logits[..., false_id]


def true_false_ranker(tf_score: str) -> Callable[[torch.Tensor, int, int], torch.Tensor]:
    """The score that RANKS pairs for a config's ``tf_score``: the log-odds for "prob" (same order as the
    probability, without float ties), the reference's ratio for "ratio"."""
    return true_false_ratio if tf_score == "ratio" else true_false_logodds


def true_false_ratio(logits: torch.Tensor, true_id: int, false_id: int) -> torch.Tensor:
    """The reference's score ``l_true / (l_true + l_false)`` on RAW logits (reproduces published numbers;
    ill-defined when the sum is <= 0 and may rank candidates differently from :func:`true_false_prob`)."""
    logits = logits.float()
    l_true, l_false = logits[..., true_id], logits[..., false_id]
    return l_true / (l_true + l_false)


# ----------------------------------------------------------------------------------------------------
# Question answering


def open_qa(
    tok,
    questions: Sequence[str],
    size_txt: int,
    answers: Sequence[str] | None = None,
    n_masks: int = 1,
) -> Layout:
    """Open-ended QA: ``[CLS] q… answer : [MASK]×n_masks [SEP] [PAD]…`` of length ``size_txt``, the
    question truncated to fit. Label at the masks: the answer's wordpieces when it has exactly ``n_masks``
    of them (see the module docstring for multi-piece answers). Answers are tokenized like any text
    (lower-cased), where the reference looked the raw string up in the vocabulary ("Playing" → [UNK])."""
    if n_masks < 1:
        raise ValueError(f"open_qa: n_masks={n_masks}; it must be >= 1")
    suffix = [*tok("answer :", add_special_tokens=False)["input_ids"]]
    tail = [*suffix, *[tok.mask_token_id] * n_masks, tok.sep_token_id]
    _need("open_qa", size_txt, 1 + len(tail))
    budget = size_txt - 1 - len(tail)
    bodies = [q[:budget] for q in _pieces(tok, questions, "open_qa")]
    ids, mask = _pack([[tok.cls_token_id, *b, *tail] for b in bodies], size_txt, tok.pad_token_id)
    mask_pos = torch.tensor([1 + len(b) + len(suffix) for b in bodies], dtype=torch.long)
    targets = _answer_labels(tok, "open_qa", answers, n_masks, len(bodies))
    return Layout(ids, mask, _supervise(ids, mask_pos, n_masks, targets), mask_pos, n_masks, task="oe")


def fill_blank(
    tok,
    sentences: Sequence[str],
    size_txt: int,
    answers: Sequence[str] | None = None,
    n_masks: int = 1,
) -> Layout:
    """Fill-in-the-blank (LSMDC-FiB): the blank is the literal "[MASK]" in each sentence (exactly one);
    ``[CLS] … [MASK]×n_masks … [SEP] [PAD]…`` of length ``size_txt``.

    Long sentences are cut from the end like the reference when the blank survives that; otherwise a
    window centred on the blank is kept (the reference lost the blank and the item).
    """
    if n_masks < 1:
        raise ValueError(f"fill_blank: n_masks={n_masks}; it must be >= 1")
    _need("fill_blank", size_txt, 2 + n_masks)
    budget = size_txt - 2
    bodies, starts = [], []
    for i, pieces in enumerate(_pieces(tok, sentences, "fill_blank")):
        blanks = [j for j, t in enumerate(pieces) if t == tok.mask_token_id]
        if len(blanks) != 1:
            raise ValueError(
                f"fill_blank: sentence {i} has {len(blanks)} '[MASK]' blanks, needs exactly "
                f"one: {sentences[i]!r:.120}"
            )
        b = blanks[0]
        pieces = [*pieces[:b], *[tok.mask_token_id] * n_masks, *pieces[b + 1 :]]
        start = 0 if b + n_masks <= budget else min(b - (budget - n_masks) // 2, len(pieces) - budget)
        bodies.append(pieces[start : start + budget])
        starts.append(1 + b - start)
    ids, mask = _pack([[tok.cls_token_id, *b, tok.sep_token_id] for b in bodies], size_txt, tok.pad_token_id)
    mask_pos = torch.tensor(starts, dtype=torch.long)
    targets = _answer_labels(tok, "fill_blank", answers, n_masks, len(bodies))
    return Layout(ids, mask, _supervise(ids, mask_pos, n_masks, targets), mask_pos, n_masks, task="oe")


@dataclass(frozen=True)
class AnswerCandidates:
    """An open-ended answer list split into wordpieces (see the module docstring)."""

    answers: tuple[str, ...]
    pieces: tuple[tuple[int, ...], ...]

    @property
    def single(self) -> dict[str, int]:
        """Answers that are ONE wordpiece → their vocabulary id (the only ones the reference could learn)."""
        return {a: p[0] for a, p in zip(self.answers, self.pieces) if len(p) == 1}

    @property
    def n_multi(self) -> int:
        """How many answers need more than one wordpiece (always wrong under the reference protocol)."""
        return sum(len(p) > 1 for p in self.pieces)

    def by_length(self) -> dict[int, tuple[list[int], torch.Tensor]]:
        """Piece count k → (indices into ``answers``, (C_k, k) piece ids) for :func:`score_candidates`."""
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(self.pieces):
            groups.setdefault(len(p), []).append(i)
        return {
            k: (idx, torch.tensor([self.pieces[i] for i in idx], dtype=torch.long))
            for k, idx in sorted(groups.items())
        }


def answer_candidates(tok, answer_list: Sequence[str]) -> AnswerCandidates:
    """Split an answer vocabulary into wordpieces; empty answers (no pieces) are an error."""
    pieces = _pieces(tok, answer_list, "answer_candidates")
    empty = [a for a, p in zip(answer_list, pieces) if not p]
    if empty:
        raise ValueError(f"answer_candidates: {len(empty)} answers have no wordpieces, e.g. {empty[:3]}")
    return AnswerCandidates(tuple(answer_list), tuple(tuple(p) for p in pieces))


def score_candidates(log_probs: torch.Tensor, candidate_ids: torch.Tensor) -> torch.Tensor:
    """Mean per-piece log-probability of each k-piece candidate.

    ``log_probs``: (B, k, V) log-softmax at the k ``[MASK]`` s (``layout.mask_index()``);
    ``candidate_ids``: (C, k). Returns (B, C). With k=1 this ranks like the masked-token softmax.
    """
    if log_probs.dim() != 3 or candidate_ids.dim() != 2 or log_probs.shape[1] != candidate_ids.shape[1]:
        raise ValueError(
            f"score_candidates: log_probs {tuple(log_probs.shape)} must be (B, k, V) and "
            f"candidate_ids {tuple(candidate_ids.shape)} (C, k) with the same k"
        )
    k = candidate_ids.shape[1]
    picked = log_probs[:, torch.arange(k, device=log_probs.device)[:, None], candidate_ids.T]  # (B, k, C)
    return picked.float().mean(dim=1)


def multiple_choice(
    tok,
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    size_txt: int,
    answers: Sequence[int] | None = None,
) -> Layout:
    """TGIF-style multiple choice in ONE sequence:
    ``question [SEP] option 0: a0 [SEP] option 1: a1 … [SEP] option 4: a4`` cut to ``size_txt - 1``
    wordpieces, then ``[CLS] … [MASK] [SEP] [PAD]…`` (length ``size_txt + 3``, the reference's geometry).
    Label: the digit of the correct option (:func:`choice_ids`); score with logits[..., choice_ids]."""
    _need("multiple_choice", size_txt, 1)
    n_options = _n_options("multiple_choice", questions, options, answers)
    digits = choice_ids(tok, n_options) if n_options else []
    texts = [
        q + "".join(f" [SEP] option {k}: {o}" for k, o in enumerate(opts))
        for q, opts in zip(questions, options)
    ]
    bodies = [p[: size_txt - 1] for p in _pieces(tok, texts, "multiple_choice")]
    rows = [[tok.cls_token_id, *b, tok.mask_token_id, tok.sep_token_id] for b in bodies]
    ids, mask = _pack(rows, size_txt + 3, tok.pad_token_id)
    mask_pos = torch.tensor([1 + len(b) for b in bodies], dtype=torch.long)
    targets = None if answers is None else [[digits[int(a)]] for a in answers]
    labels = _supervise(ids, mask_pos, 1, targets or [None] * len(rows))
    return Layout(ids, mask, labels, mask_pos, task="mc")


# ----------------------------------------------------------------------------------------------------
# Masked language modelling (pretraining) and captioning


def mlm_mask(
    ids: torch.Tensor,
    special_ids: Sequence[int],
    mask_id: int,
    p: float = 0.15,
    generator: torch.Generator | None = None,
    mode: str = "mask",
    vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pretraining MLM corruption of ``ids`` (B, L) → (corrupted ids, labels).

    Every token whose id is not in ``special_ids`` (see :func:`special_ids`) is selected with probability
    ``p``; labels are the original ids at selected positions, :data:`IGNORE_INDEX` elsewhere.
    ``mode="mask"`` (reference) replaces every selected token by ``[MASK]``; ``mode="bert"`` uses BERT's
    80% ``[MASK]`` / 10% random id in ``[0, vocab_size)`` / 10% unchanged. A row with at least one
    maskable token always gets at least one selected (one drawn uniformly if the Bernoulli draw picked
    none), so no row is wasted — this raises the effective rate slightly for very short texts
    (the reference has no such guarantee). Random draws use ``generator`` (a CPU ``torch.Generator``;
    tensors on another device are moved back afterwards): same generator state → same corruption.
    """
    maskable = ~torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype, device=ids.device))
    return _corrupt(ids, maskable, mask_id, p, generator, mode, vocab_size)


def _caption_rows(
    tok, captions: Sequence[str], size_txt: int, what: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``[CLS] w… [SEP] [PAD]…`` (length ``size_txt``, captions truncated) and its mask."""
    _need(what, size_txt, 2)
    rows = [[tok.cls_token_id, *c[: size_txt - 2], tok.sep_token_id] for c in _pieces(tok, captions, what)]
    return _pack(rows, size_txt, tok.pad_token_id)


def caption_train(
    tok,
    captions: Sequence[str],
    size_txt: int,
    p: float = 0.15,
    generator: torch.Generator | None = None,
    mask_cls: bool = True,
) -> Layout:
    """Captioning training input ``[CLS] w… [SEP] [PAD]…`` (length ``size_txt``) with each non-[PAD]
    token replaced by ``[MASK]`` with probability ``p`` (at least one per row), labels at those positions,
    attention "seq2seq" (causal over the text; the model builds it).

    As in the reference (§1.9) ``[SEP]`` can be masked, so the model learns where a caption ends, and so
    can ``[CLS]`` (the reference masks every non-[PAD]/non-[MASK] token); ``mask_cls=False`` keeps the
    start token intact, matching what decoding always feeds.
    """
    ids, mask = _caption_rows(tok, captions, size_txt, "caption_train")
    maskable = (ids != tok.pad_token_id) & (ids != tok.mask_token_id)
    if not mask_cls:
        maskable &= ids != tok.cls_token_id
    corrupted, labels = _corrupt(ids, maskable, tok.mask_token_id, p, generator, "mask", None)
    return Layout(corrupted, mask, labels, attn="seq2seq", task="cap")


def caption_lm(tok, captions: Sequence[str], size_txt: int) -> Layout:
    """Captioning's next-token (LM) input: ``[CLS] w… [SEP] [PAD]…`` (length ``size_txt``) as it is, each
    position labelled with the token after it (the last token and padding unsupervised), attention
    "seq2seq": under the causal mask position i sees tokens 0..i and predicts token i + 1 (AVLFormer's LM
    loss through the one MLM head)."""
    ids, mask = _caption_rows(tok, captions, size_txt, "caption_lm")
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[:, :-1] = torch.where(mask[:, 1:].bool(), ids[:, 1:], IGNORE_INDEX)
    return Layout(ids, mask, labels, attn="seq2seq", task="cap")


def caption_start(tok, batch_size: int) -> torch.Tensor:
    """The decoding prefix every caption starts from: (B, 1) of ``[CLS]``."""
    return torch.full((batch_size, 1), tok.cls_token_id, dtype=torch.long)


def caption_step(tok, prefix_ids: torch.Tensor, size_txt: int) -> Layout:
    """One decoding step: ``prefix… [MASK]`` (B, t+1), all attended, attention "seq2seq"; the next token
    is predicted at ``mask_pos`` = t. Greedy or beam search append their choice to the prefix and repeat
    until ``[SEP]`` or ``size_txt`` tokens."""
    if prefix_ids.dim() != 2 or prefix_ids.shape[1] < 1:
        raise ValueError(
            f"caption_step: prefix_ids must be (B, t>=1) starting with [CLS], got "
            f"{tuple(prefix_ids.shape)}; start from caption_start()"
        )
    n, t = prefix_ids.shape
    if t + 1 > size_txt:
        raise ValueError(
            f"caption_step: prefix of {t} tokens + [MASK] exceeds size_txt={size_txt}; stop decoding"
        )
    masks = torch.full((n, 1), tok.mask_token_id, dtype=torch.long, device=prefix_ids.device)
    ids = torch.cat([prefix_ids.long(), masks], dim=1)
    return Layout(
        ids,
        torch.ones_like(ids),
        torch.full_like(ids, IGNORE_INDEX),
        torch.full((n,), t, dtype=torch.long, device=ids.device),
        attn="seq2seq",
        task="cap",
    )


def _corrupt(
    ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_id: int,
    p: float,
    generator: torch.Generator | None,
    mode: str,
    vocab_size: int | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select ~p of the maskable positions (>= 1 per row that has any) and corrupt them per ``mode``."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode {mode!r}; choose one of {MASK_MODES}")
    if mode == "bert" and not vocab_size:
        raise ValueError("mode='bert' draws random tokens: pass vocab_size (len(tokenizer))")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"masking probability p={p} must lie in [0, 1]")
    rand = torch.rand(ids.shape, generator=generator).to(ids.device)
    maskable = maskable.to(ids.device)
    selected = (rand < p) & maskable
    empty = (selected.sum(dim=1) == 0) & (maskable.sum(dim=1) > 0)
    if p > 0 and empty.any():
        rows = empty.nonzero().squeeze(1)
        pick = torch.multinomial(maskable[rows].float().cpu(), 1, generator=generator).squeeze(1)
        selected[rows, pick.to(ids.device)] = True
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    corrupted = ids.clone()
    if mode == "mask":
        corrupted[selected] = mask_id
        return corrupted, labels
    fate = torch.rand(ids.shape, generator=generator).to(ids.device)
    to_mask = selected & (fate < 0.8)
    to_random = selected & (fate >= 0.8) & (fate < 0.9)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator).to(ids.device)
    corrupted[to_mask] = mask_id
    corrupted[to_random] = random_ids[to_random]
    return corrupted, labels
