"""Multiple-choice video QA as masked-token prediction (reference main_qamc_mlm.py / main_retmc_mlm.py).

``mc_style`` picks the layout:

* "sequence" (TGIF-Action/Transition): question and every option in ONE sequence
  (:func:`lib.model.layouts.multiple_choice`), the correct option's digit at the [MASK]. Training:
  cross-entropy over the full vocabulary. Evaluation: arg-max of the softmax over the digits "0".."O-1"
  (``tf_score: ratio`` divides the logits by their sum instead, as the reference did); with ``mc_shifts``
  > 1 averaged over that many cyclic shifts of the option order (:func:`sequence_option_scores`), which
  cancels a model's preference for a position (e.g. the option nearest the [MASK]).
* "retrieval" (MSRVTT-MC, LSMDC-MC): every option is its own ``question option [MASK]`` sequence
  (:func:`layouts.retrieval_mc`), "true"/"false" at its [MASK]. Training: cross-entropy over the full
  vocabulary at each option's [MASK]. Evaluation: arg-max over options of p(true) (the 2-way softmax,
  :func:`layouts.true_false_prob`; ``tf_score: ratio`` = the reference's raw-logit ratio).
* "auto" (default): "retrieval" when the file's first question is empty, else "sequence".

Each video is encoded once per batch and its tokens repeated over its options (and, with
``items_per_video`` > 1 in training, over its several questions). Accuracy is over the full
official test size (``size_test`` on the test split; skipped items count as wrong); every item is
evaluated on exactly one rank.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from lib.data.datasets import answered_rows_batch
from lib.engine.config import Config
from lib.metrics.qa import mc_accuracy
from lib.model import layouts
from lib.model.mlm import masked_labels, masked_logits
from lib.tasks.common import AnnotatedTask, Predictor, Task
from lib.tasks.registry import register_task

TF_SCORES = {
    "prob": "2-way softmax over the 'true'/'false' logits",
    "ratio": "the reference's raw-logit ratio l_true / (l_true + l_false)",
}


def shift_offsets(n_options: int, shifts: int) -> list[int]:
    """``shifts`` cyclic offsets spread evenly over ``n_options`` positions (0 first)."""
    if not 1 <= shifts <= n_options:
        raise ValueError(f"mc_shifts={shifts}: choose 1..{n_options} (the number of options, size_option)")
    return [i * n_options // shifts for i in range(shifts)]


def digit_scores(digits: torch.Tensor, ratio: bool = False) -> torch.Tensor:
    """Option scores from the (B, O) logits of the option digits: their softmax, or with ``ratio`` the
    reference's logits divided by their sum."""
    digits = digits.float()
    return digits / digits.sum(-1, keepdim=True) if ratio else digits.softmax(-1)


def sequence_option_scores(
    logits_at_mask: Callable[[layouts.Layout], torch.Tensor],
    tok,
    questions: Sequence[str],
    options: Sequence[Sequence[str]],
    size_txt: int,
    shifts: int = 1,
    ratio: bool = False,
) -> torch.Tensor:
    """(B, O) option scores of one-sequence multiple choice: the softmax over the option digits at the
    [MASK] (``ratio``: the reference's logits divided by their sum), averaged over ``shifts`` cyclic shifts
    of the option order. Shift s shows option (j + s) mod O at position j; its scores are mapped back to
    the given order. ``logits_at_mask(layout)`` returns the (B, V) logits at each row's [MASK]."""
    n = len(options[0]) if options else 0
    digits = layouts.choice_ids(tok, n)
    total = torch.zeros(len(questions), n)
    offsets = shift_offsets(n, shifts)
    for s in offsets:
        shown = [[opts[(j + s) % n] for j in range(n)] for opts in options]
        logits = logits_at_mask(layouts.multiple_choice(tok, questions, shown, size_txt))[:, digits]
        total += digit_scores(logits, ratio).cpu()[:, [(k - s) % n for k in range(n)]]
    return total / len(offsets)


def style_of(question: str, style: str = "auto") -> str:
    """The multiple-choice style of a question: "retrieval" when it is empty (each option is its own
    sequence), else "sequence"; a given style other than "auto" wins."""
    return style if style != "auto" else ("sequence" if question.strip() else "retrieval")


class ChoicePredictor(Predictor):
    """Multiple-choice option scores, in the task's style (see the module).

    Settings: ``size_txt``, ``style`` ("sequence", "retrieval" or "auto": by the question, as in training),
    ``tf_score``, ``shifts`` (cyclic shifts of the option order averaged in the "sequence" style)."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)
        self.ratio = self.settings.get("tf_score", "prob") == "ratio"

    @staticmethod
    def fits(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> bool:
        return settings.get("style", "auto") in (style_of(inputs["question"]), "auto")

    @staticmethod
    def variant(settings: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
        style = style_of(inputs["question"], settings.get("style", "auto"))
        return f"{style}/{len(inputs['options'])}"

    def scores(
        self,
        feat: torch.Tensor,
        mask: torch.Tensor,
        questions: list[str],
        options: list[list[str]],
        style: str,
        video_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, O) ranking scores of every option of each question (on video ``video_index[i]``, default i):
        the option digits' probabilities ("sequence"), or the true/false ranking score ("retrieval")."""
        if video_index is None:
            video_index = torch.arange(feat.shape[0], device=feat.device)
        size_txt = int(self.settings["size_txt"])
        n = len(options[0])
        if style == "sequence":
            return sequence_option_scores(
                lambda layout: masked_logits(self.model, feat, mask, layout, video_index)[:, 0],
                self.tok,
                questions,
                options,
                size_txt,
                min(int(self.settings.get("shifts", 1)), n),
                self.ratio,
            )
        layout = layouts.retrieval_mc(self.tok, questions, options, size_txt)
        logits = masked_logits(self.model, feat, mask, layout, video_index.repeat_interleave(n))[:, 0]
        ranker = layouts.true_false_ranker(self.settings.get("tf_score", "prob"))
        return ranker(logits, self.true_id, self.false_id).view(-1, n).cpu()

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """``{"answer", "index", "scores"}`` for each row's ``question`` and ``options`` (one variant a
        call): option probabilities ("sequence"), p("true") per option ("retrieval"; the raw ratio under
        ``tf_score`` "ratio")."""
        questions = [row["question"] for row in inputs]
        opts = [list(row["options"]) for row in inputs]
        style = style_of(questions[0], self.settings.get("style", "auto"))
        rank = self.scores(feat, mask, questions, opts, style)
        shown = rank if style == "sequence" or self.ratio else torch.sigmoid(rank)
        best = rank.argmax(-1)
        return [
            {"answer": o[b], "index": b, "scores": s} for o, b, s in zip(opts, best.tolist(), shown.tolist())
        ]


@register_task("qamc", aliases=("qa_choice",))
class ChoiceTask(AnnotatedTask):
    annotation_format = "qa_choice"
    predictor = ChoicePredictor
    groups_items = True

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        style = cfg.mc_style
        if style == "auto":
            first = self.first_record()
            style = "retrieval" if first is not None and not first.question.strip() else "sequence"
        self.style = style
        self.tf_score = cfg.tf_score
        self.n_options = cfg.size_option
        self.shifts = cfg.mc_shifts if style == "sequence" else 1
        shift_offsets(self.n_options, self.shifts)  # a clear error now, not at the first evaluation
        self.digit_ids = layouts.choice_ids(tokenizer, self.n_options)
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        return {
            **(super().inference_entry(cfg, task) or {}),
            "style": getattr(task, "style", cfg.mc_style),
            "n_options": cfg.size_option,
            "tf_score": cfg.tf_score,
            "size_test": cfg.size_test,
            "shifts": cfg.mc_shifts,  # one-sequence style only
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        if entry.get("style") == "sequence":
            how = "arg-max of the option digits at the [MASK] of one sequence holding every option"
            if entry.get("shifts", 1) > 1:
                how += (
                    f", their probabilities averaged over {entry['shifts']} cyclic shifts of the option order"
                )
        else:
            tf = TF_SCORES.get(entry.get("tf_score", "prob"), "")
            how = f"arg-max over options of the true/false score, {tf}"
        return f"multiple-choice accuracy (%) over the official test size ({entry.get('style')} style: {how})"

    def annotation_options(self) -> dict[str, Any]:
        return {"n_options": self.cfg.size_option}

    def layout(self, records: list, answers: list[int] | None = None) -> layouts.Layout:
        """One row per question ("sequence") or per (question, option), row-major ("retrieval")."""
        build = layouts.multiple_choice if self.style == "sequence" else layouts.retrieval_mc
        questions = [r.question for r in records]
        return build(self.tok, questions, [list(r.options) for r in records], self.cfg.size_txt, answers)

    def option_logits(
        self,
        model,
        feat: torch.Tensor,
        mask: torch.Tensor,
        layout: layouts.Layout,
        video_index: torch.Tensor | None = None,
    ):
        """(rows, V) logits at each row's [MASK] (question i on video ``video_index[i]``, default i); in
        "retrieval" style a question's video serves each of its option rows."""
        if video_index is None:
            video_index = torch.arange(feat.shape[0], device=feat.device)
        if self.style == "retrieval":
            video_index = video_index.repeat_interleave(self.n_options)
        return masked_logits(model, feat, mask, layout, video_index)[:, 0]

    def option_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(B, O) score of every option from the (rows, V) logits."""
        if self.style == "sequence":
            return digit_scores(logits[:, self.digit_ids], self.tf_score == "ratio")
        score = layouts.true_false_ranker(self.tf_score)
        return score(logits, self.true_id, self.false_id).view(-1, self.n_options)

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """One question per row (an item holds several with ``items_per_video``); ``row_video`` = the
        item (clip) of each question."""
        return answered_rows_batch(items, self.layout)

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"])
        layout = batch["layout"]
        logits = self.option_logits(model, feat, mask, layout, batch["row_video"].to(feat.device))
        labels = masked_labels(layout, logits.device)[:, 0]
        loss = F.cross_entropy(logits, labels)
        chosen = self.option_scores(logits.detach()).argmax(dim=-1)
        return {"loss": loss, "acc": (chosen == batch["answer"].to(chosen.device)).float().mean()}

    # ---- evaluation

    def predict_batch(
        self, model, feat: torch.Tensor, mask: torch.Tensor, records: list, rows: torch.Tensor | None = None
    ) -> list[torch.Tensor]:
        """The (O,) option scores of each record (on video ``rows[i]``), by the task's predictor."""
        questions, options = [r.question for r in records], [list(r.options) for r in records]
        return list(self.make_predictor(model).scores(feat, mask, questions, options, self.style, rows))

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        scores = torch.stack(self.predict(model, split, self.predict_batch))
        answers = [r.answer for r in records]
        size = self.official_size(split)
        return {
            "acc": mc_accuracy(scores, answers, size_test=size),
            "acc_given": mc_accuracy(scores, answers),
            "n_items": float(len(records)),
            "n_skipped": float(self.ann.skipped.get(split, 0)),
            "denominator": float(max(size, len(records))),
        }
