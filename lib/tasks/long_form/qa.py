"""Long-form multiple-choice QA (How2QA / VIOLIN-style): a question about the whole video, with the
subtitle text around it, answered at ONE [MASK] by the one MLM head.

Data: ``long_qa`` annotations (:mod:`lib.data.annotations`: our ``qa_choice`` items with an optional
``subtitle``, or TVQA / How2QA rows ``vid_name, q, a0.., answer_idx, sub`` as they are); the clip is
``long_clips`` x ``long_frames_per_clip`` frames spread over the whole video (the HTWA Swin reads them).

Layout: the one-sequence multiple choice of TGIF (:func:`lib.model.layouts.multiple_choice`): ``question
[SEP] subtitles: ... [SEP] option 0: a0 ...`` with the option digit at the [MASK]; the subtitle (with
``long_subtitles``) is cut to what the text length leaves after the question and every option, so an
option is never cut for it. Training: cross-entropy over the vocabulary at the [MASK]. Evaluation: the
arg-max of the softmax over the option digits (averaged over ``mc_shifts`` cyclic shifts of the options),
by the ``qamc`` task's own predictor; accuracy over the official size (``size_test``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lib.data.datasets import answered_rows_batch
from lib.engine.config import Config
from lib.metrics.qa import mc_accuracy
from lib.model import layouts
from lib.model.mlm import masked_labels, masked_logits
from lib.tasks.common import Predictor, Task
from lib.tasks.long_form import LongFormTask
from lib.tasks.registry import get_task, register_task

SUBTITLE = " [SEP] subtitles: "


def with_subtitle(tok, question: str, options: Sequence[str], subtitle: str, size_txt: int) -> str:
    """The question followed by as much of ``subtitle`` as fits beside the question and every option in
    the one-sequence layout of ``size_txt`` wordpieces."""
    if not subtitle.strip():
        return question
    rest = question + SUBTITLE + "".join(f" [SEP] option {k}: {o}" for k, o in enumerate(options))
    budget = size_txt - 1 - len(tok(rest, add_special_tokens=False)["input_ids"])
    if budget <= 0:
        return question
    pieces = tok(subtitle, add_special_tokens=False)["input_ids"][:budget]
    return question + SUBTITLE + tok.decode(pieces)


class LongQAPredictor(Predictor):
    """Option scores of a question about a long video (and its subtitle): the ``qamc`` predictor's
    one-sequence scores of the question with its subtitle.

    Settings: ``size_txt``, ``shifts``, ``tf_score``, ``subtitles`` (whether subtitles are read)."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        self.choice = get_task("qamc").predictor(model, tokenizer, {**self.settings, "style": "sequence"})

    @staticmethod
    def variant(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
        return str(len(inputs["options"]))

    def question_texts(
        self, questions: Sequence[str], options: Sequence[Sequence[str]], subtitles: Sequence[str]
    ):
        if not self.settings.get("subtitles", True):
            return list(questions)
        size_txt = int(self.settings["size_txt"])
        return [with_subtitle(self.tok, q, o, s, size_txt) for q, o, s in zip(questions, options, subtitles)]

    def scores(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        questions: Sequence[str],
        options: Sequence[Sequence[str]],
        subtitles: Sequence[str],
        video_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, O) option probabilities of each question (on video ``video_index[i]``, default i)."""
        texts = self.question_texts(questions, options, subtitles)
        return self.choice.scores(feat, mask, texts, [list(o) for o in options], "sequence", video_index)

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """``{"answer", "index", "scores"}`` for each row's ``question``, ``options`` and optional
        ``subtitle`` (a string)."""
        opts = [list(row["options"]) for row in inputs]
        subtitles = [row.get("subtitle", "") or "" for row in inputs]
        scores = self.scores(feat, mask, [row["question"] for row in inputs], opts, subtitles)
        best = scores.argmax(-1).tolist()
        return [{"answer": o[b], "index": b, "scores": s} for o, b, s in zip(opts, best, scores.tolist())]


@register_task("long-qa", aliases=("long_qa",))
class LongQATask(LongFormTask):
    annotation_format = "long_qa"
    predictor = LongQAPredictor
    groups_items = True

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.digit_ids = layouts.choice_ids(tokenizer, cfg.size_option)

    def annotation_options(self) -> dict[str, Any]:
        return {"n_options": self.cfg.size_option}

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        return {
            **cls.long_settings(cfg),
            "n_options": cfg.size_option,
            "shifts": cfg.mc_shifts,
            "tf_score": cfg.tf_score,
            "subtitles": cfg.long_subtitles,
            "size_test": cfg.size_test,
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        subtitles = "with its subtitle" if entry.get("subtitles", True) else "without subtitles"
        return (
            f"long-video multiple-choice accuracy (%) over the official test size: the question {subtitles} "
            "and every option in one sequence, the option digit at the [MASK] "
            f"({entry.get('n_clips')} clips x {entry.get('frames_per_clip')} frames over the whole video)"
        )

    def layout(self, records: Sequence[Any], answers: list[int] | None = None) -> layouts.Layout:
        options = [list(r.options) for r in records]
        subtitles = [r.subtitle if self.cfg.long_subtitles else "" for r in records]
        texts = [
            with_subtitle(self.tok, r.question, o, s, self.cfg.size_txt)
            for r, o, s in zip(records, options, subtitles)
        ]
        return layouts.multiple_choice(self.tok, texts, options, self.cfg.size_txt, answers)

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return answered_rows_batch(items, self.layout)

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"])
        layout = batch["layout"]
        logits = masked_logits(model, feat, mask, layout, batch["row_video"].to(feat.device))[:, 0]
        labels = masked_labels(layout, logits.device)[:, 0]
        chosen = logits.detach()[:, self.digit_ids].argmax(-1)
        return {
            "loss": F.cross_entropy(logits, labels),
            "acc": (chosen == batch["answer"].to(chosen.device)).float().mean(),
        }

    # ---- evaluation

    def predict_batch(self, model, feat, mask, records: list, rows: torch.Tensor | None = None) -> list:
        predictor = self.make_predictor(model)
        questions, options = [r.question for r in records], [list(r.options) for r in records]
        return list(predictor.scores(feat, mask, questions, options, [r.subtitle for r in records], rows))

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        scores = torch.stack(self.predict(model, split, self.predict_batch))
        answers = [r.answer for r in records]
        size = self.official_size(split)
        return {
            "acc": mc_accuracy(scores, answers, size_test=size),
            "n_items": float(len(records)),
            "n_skipped": float(self.ann.skipped.get(split, 0)),
            "denominator": float(max(size, len(records))),
        }
