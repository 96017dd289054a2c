"""Open-ended video QA as masked-token prediction (reference ``main_qaoe_mlm.py``), incl. fill-in-the-blank.

Input: ``[CLS] question answer : [MASK] [SEP]`` (:func:`lib.model.layouts.open_qa`), or, for LSMDC-FiB style
files whose questions carry a literal ``[MASK]`` blank, the sentence itself (:func:`layouts.fill_blank`).
``qa_layout``: "auto" (default: fill-in-the-blank when the file's first question contains "[MASK]"),
"open" or "fill_blank".

Training: cross-entropy over the full vocabulary at the [MASK]. An answer of k wordpieces sits on k
consecutive [MASK]s (the reference silently dropped every answer that is not ONE wordpiece): a batch is
split by its answers' piece counts, one fusion pass per count, each video encoded once. The loss is the
mean over questions of the mean over their pieces. Answers of more than :func:`max_answer_pieces` pieces
are not supervised (and not candidates at evaluation).

Evaluation (``qa_answer_space``):

* "candidates" (default): the prediction is the best answer of the file's answer list (top-level
  ``vocab``/``ans2label``, else every ``answer_text`` of the train split), each k-piece candidate scored by
  its mean log-probability under a k-[MASK] layout (:func:`layouts.score_candidates`), one fusion pass per
  piece count present in the list. Answers of several wordpieces can be predicted. Known limit: the
  model never learns which piece count a question wants, so a one-piece candidate that is also a piece
  of the right answer ("jeans" for "blue jeans") can outscore it.
* "vocab" (the reference protocol): arg-max (and top-5) over the whole vocabulary at ONE [MASK]; answers
  of several wordpieces are then always wrong (their count is reported as ``n_multi_piece``).

Accuracy is over the full official test size (``size_test`` on the test split; items skipped with
``on_bad_item: skip`` count as wrong everywhere), plus top-5 accuracy, accuracy per question type
(``acc_type/<qtype>``) and the counts behind them. Every item is evaluated on exactly one rank.

:class:`AnnotatedTask` (one annotation file + one frame store, training stream, exact-once prediction)
is shared with :mod:`lib.tasks.qa_choice`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lib.data.annotations import AnnotationError, OpenQAItem, RecordList
from lib.data.datasets import item_rows, stack_clips
from lib.engine.config import Config, ConfigError
from lib.metrics.qa import accuracy_by_type, normalize_answer, qa_report
from lib.model import layouts
from lib.model.mlm import answer_pieces_loss, masked_logits
from lib.tasks.common import AnnotatedTask, Predictor, Task
from lib.tasks.registry import register_task

logger = logging.getLogger(__name__)

TOP_K = 5
MAX_ANSWER_PIECES = 8
BLANK = "[MASK]"


def max_answer_pieces(size_txt: int) -> int:
    """The longest answer (in wordpieces) trained and predicted: at most 8 and half the text length."""
    return max(1, min(MAX_ANSWER_PIECES, size_txt // 2))


def qa_layout(
    tok, questions: list[str], size_txt: int, n_masks: int, fill_blank: bool, answers: list[str] | None = None
) -> layouts.Layout:
    """``[CLS] question answer : [MASK]… [SEP]`` (or the fill-in-the-blank sentence), ``n_masks`` masks."""
    build = layouts.fill_blank if fill_blank else layouts.open_qa
    return build(tok, questions, size_txt, answers, n_masks=n_masks)


class OpenQAPredictor(Predictor):
    """Open-ended answers at the [MASK]: the answer list ranked by mean per-piece log-probability, or the
    arg-max over the vocabulary at one [MASK] when the settings carry no list.

    Settings: ``size_txt``, ``layout`` ("open", "fill_blank", or "auto": fill-in-the-blank when the question
    holds a ``[MASK]`` blank), ``answers`` (the candidate list; empty for the vocabulary)."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        self.answers: list[str] = list(self.settings.get("answers") or [])
        self.groups = layouts.answer_candidates(tokenizer, self.answers).by_length() if self.answers else {}

    @staticmethod
    def is_fill_blank(settings: Mapping[str, Any], question: str) -> bool:
        layout = settings.get("layout", "auto")
        return layout == "fill_blank" or (layout == "auto" and BLANK in question)

    @staticmethod
    def fits(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> bool:
        return (settings.get("layout") == "fill_blank") == (BLANK in inputs["question"])

    @staticmethod
    def variant(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
        return "fill_blank" if OpenQAPredictor.is_fill_blank(settings, inputs["question"]) else "open"

    def log_probs(
        self, feat: torch.Tensor, mask: torch.Tensor, questions: list[str], n_masks: int, fill_blank: bool,
        video_index: torch.Tensor | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """(B, n_masks, V) log-probabilities at the answer's [MASK]s."""
        layout = qa_layout(self.tok, questions, int(self.settings["size_txt"]), n_masks, fill_blank)
        return masked_logits(self.model, feat, mask, layout, video_index).log_softmax(-1)

    def ranked(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        questions: list[str],
        fill_blank: bool,
        top_k: int = TOP_K,
        video_index: torch.Tensor | None = None,
    ) -> tuple[list[list[str]], list[list[float]]]:
        """The ``top_k`` answers of each question (on video ``video_index[i]``, default i), best first, and
        their scores (mean log-probability per piece; the log-probability for the vocabulary)."""
        if not self.answers:
            top = self.log_probs(feat, mask, questions, 1, fill_blank, video_index)[:, 0].topk(top_k, dim=-1)
            names = [self.tok.convert_ids_to_tokens(row) for row in top.indices.tolist()]
            return names, top.values.tolist()
        scores = torch.full((len(questions), len(self.answers)), float("-inf"))
        for k, (index, pieces) in self.groups.items():
            lp = self.log_probs(feat, mask, questions, k, fill_blank, video_index)
            scores[:, index] = layouts.score_candidates(lp, pieces.to(lp.device)).cpu()
        top = scores.topk(min(top_k, scores.shape[1]), dim=-1)
        return [[self.answers[j] for j in row] for row in top.indices.tolist()], top.values.tolist()

    def predict(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        inputs: Sequence[Mapping[str, Any]],
        top_k: int = TOP_K,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """``{"answer", "top": [(answer, score), ...]}`` for each row's ``question`` (one variant a call)."""
        questions = [row["question"] for row in inputs]
        fill_blank = self.is_fill_blank(self.settings, questions[0])
        if fill_blank:
            for q in questions:
                if q.count(BLANK) != 1:
                    raise ValueError(
                        f"question {q!r}: the QA task {self.settings.get('name')} is fill-in-the-blank; the "
                        "question needs exactly one [MASK] blank"
                    )
        names, values = self.ranked(feat, mask, questions, fill_blank, top_k)
        return [{"answer": ns[0], "top": list(zip(ns, map(float, vs)))} for ns, vs in zip(names, values)]


@register_task("qaoe", aliases=("qa_open",))
class OpenQATask(AnnotatedTask):
    annotation_format = "qa_open"
    predictor = OpenQAPredictor
    groups_items = True

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.answer_space = cfg.qa_answer_space
        self.fill_blank = self.detect_fill_blank(cfg.qa_layout)
        if self.fill_blank:
            self.check_blanks()
        self.max_pieces = max_answer_pieces(cfg.size_txt)
        self.candidates: list[str] = []
        self.candidate_groups: dict[int, tuple[list[int], torch.Tensor]] = {}
        if self.answer_space == "candidates":
            self.candidates, self.candidate_groups = self.answer_candidates()

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        answers = list(getattr(task, "candidates", None) or [])
        layout = ("fill_blank" if task.fill_blank else "open") if task is not None else cfg.qa_layout  # type: ignore[attr-defined]
        return {
            **(super().inference_entry(cfg, task) or {}),
            "layout": layout,
            "answer_space": "candidates" if answers else "vocab",
            "max_answer_pieces": max_answer_pieces(cfg.size_txt),
            "size_test": cfg.size_test,
            "answers": answers,
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        space = (
            f"answers ranked among {len(entry.get('answers', []))} candidates by their mean per-piece "
            "log-probability"
            if entry.get("answers")
            else "the arg-max over the whole vocabulary at one [MASK] (the reference protocol)"
        )
        size_test = entry.get("size_test") or "= items in the file"
        return (
            f"open-ended QA accuracy (%) of the top answer over the full official test size (size_test "
            f"{size_test}; questions missing from the file count as wrong); {space}"
        )

    # ---- layouts

    def detect_fill_blank(self, qa_layout: str) -> bool:
        if qa_layout != "auto":
            return qa_layout == "fill_blank"
        first = self.first_record()
        return first is not None and BLANK in first.question

    def check_blanks(self) -> None:
        """Each fill-in-the-blank question needs exactly one "[MASK]"; bad ones raise or are skipped."""
        for split, records in list(self.ann.splits.items()):
            bad = [i for i, r in enumerate(records) if r.question.count(BLANK) != 1]
            if not bad:
                continue
            if self.on_bad_item == "raise":
                n = records[bad[0]].question.count(BLANK)
                raise AnnotationError(
                    self.ann.path,
                    f"has {n} '{BLANK}' blanks; a fill-in-the-blank question needs exactly one (fix the "
                    "file, set qa_layout to 'open', or skip such items with on_bad_item 'skip')",
                    split=split,
                    index=bad[0],
                    key="question",
                )
            drop = set(bad)
            self.ann.splits[split] = RecordList(
                OpenQAItem, (r for i, r in enumerate(records) if i not in drop)
            )
            self.ann.skipped[split] = self.ann.skipped.get(split, 0) + len(bad)
            logger.warning(
                "%s: skipped %d %s questions without exactly one blank", self.ann.path, len(bad), split
            )

    def layout(self, questions: list[str], n_masks: int, answers: list[str] | None = None) -> layouts.Layout:
        return qa_layout(self.tok, questions, self.cfg.size_txt, n_masks, self.fill_blank, answers)

    def piece_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(p) for p in self.tok(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

    def answer_candidates(self) -> tuple[list[str], dict[int, tuple[list[int], torch.Tensor]]]:
        """The answer list (normalised, unique) and its candidates grouped by piece count."""
        if self.ann.vocab:
            source = self.ann.vocab
        elif "train" in self.ann.splits and len(self.ann["train"]):
            source = [r.answer_text for r in self.ann["train"]]
        else:
            raise ConfigError(
                f"{self.ann.path}: qa_answer_space 'candidates' needs an answer list: a top-level 'vocab' or "
                "'ans2label', or a train split; or use qa_answer_space 'vocab' (arg-max over the vocabulary)"
            )
        answers = [a for a in dict.fromkeys(normalize_answer(a) for a in source) if a]
        counts = self.piece_counts(answers)
        too_long = [a for a, k in zip(answers, counts) if k > self.max_pieces]
        if too_long:
            logger.warning(
                "%s: %d answers have more than %d wordpieces and cannot be predicted, e.g. %s",
                self.ann.path, len(too_long), self.max_pieces, too_long[:3],
            )  # fmt: skip
        answers = [a for a, k in zip(answers, counts) if 0 < k <= self.max_pieces]
        if not answers:
            raise ConfigError(
                f"{self.ann.path}: the answer list has no answer of 1..{self.max_pieces} pieces"
            )
        return answers, layouts.answer_candidates(self.tok, answers).by_length()

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Rows (one per question; an item holds several with ``items_per_video``) grouped by their answer's
        piece count: ``groups`` = [(the clip of each row, layout with k masks)]."""
        records, row_video = item_rows(items)
        questions = [r.question for r in records]
        answers = [r.answer_text for r in records]
        rows_of: dict[int, list[int]] = {}
        for row, k in enumerate(self.piece_counts(answers)):
            if 0 < k <= self.max_pieces:
                rows_of.setdefault(k, []).append(row)
        groups = [
            (row_video[rows], self.layout([questions[i] for i in rows], k, [answers[i] for i in rows]))
            for k, rows in sorted(rows_of.items())
        ]
        return {"video": stack_clips(items), "groups": groups, "ids": [item["id"] for item in items]}

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"])
        return answer_pieces_loss(model, feat, mask, batch["groups"])

    # ---- evaluation

    def predict_batch(
        self, model, feat: torch.Tensor, mask: torch.Tensor, records: list, rows: torch.Tensor | None = None
    ) -> list[list[str]]:
        """The top-5 answers of each record (on video ``rows[i]``), best first (the task's predictor)."""
        questions = [r.question for r in records]
        return self.make_predictor(model).ranked(feat, mask, questions, self.fill_blank, TOP_K, rows)[0]

    def reachable(self, answers: list[str]) -> list[bool]:
        """Whether each answer can be predicted at all in this answer space."""
        if self.answer_space == "vocab":
            return [k == 1 for k in self.piece_counts(answers)]
        known = set(self.candidates)
        return [normalize_answer(a) in known for a in answers]

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        ranked = dict(enumerate(self.predict(model, split, self.predict_batch)))
        answers = {i: r.answer_text for i, r in enumerate(records)}
        size = self.official_size(split)
        report = qa_report(ranked, answers, size_test=size, k=1)
        texts = list(answers.values())
        metrics = {
            "acc": report["acc"],
            f"acc_top{TOP_K}": qa_report(ranked, answers, size_test=size, k=TOP_K)["acc"],
            "acc_given": report["acc_given"],
            "n_items": report["n_items"],
            "n_skipped": float(self.ann.skipped.get(split, 0)),
            "denominator": report["denominator"],
            "n_multi_piece": float(sum(k > 1 for k in self.piece_counts(texts))),
            "n_out_of_space": float(sum(not ok for ok in self.reachable(texts))),
        }
        types = {i: r.qtype for i, r in enumerate(records) if r.qtype is not None}
        if types:
            typed = {i: answers[i] for i in types}
            by_type = accuracy_by_type(ranked, typed, types)
            metrics.update({f"acc_type/{t}": acc for t, acc in by_type.items()})
        return metrics
