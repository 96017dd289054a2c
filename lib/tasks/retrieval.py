"""Text-to-video retrieval as masked-token prediction: "true"/"false" at a [MASK] after the text.

Training: every video of a batch is paired with its own caption ("true") and ``vtm_negatives`` captions of
other videos of the batch ("false"); the loss is cross-entropy over the full vocabulary at the [MASK]
(reference §1.7). Each video is encoded once per batch; its tokens are repeated for its pairs.

Evaluation: every caption of the split is a query against every video (a full cross-encoder ranking, as
the reference). Each video is encoded ONCE (spread over the ranks, then shared); fusion passes are batched
over (text, video) pairs, ``eval_pair_batch`` pairs at a time; each rank scores its share of the texts.
The score is the 2-way softmax over the "true"/"false" logits (``tf_score: ratio`` gives the reference's
raw-logit ratio). Reported: text→video and video→text R@1/5/10, median and mean rank, and the cost per pair.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lib.data.annotations import caption_text
from lib.data.datasets import stack_clips
from lib.engine import distributed as D
from lib.engine.config import Config
from lib.metrics.retrieval import retrieval_metrics
from lib.model import layouts
from lib.model.bert import FusionContext
from lib.model.mlm import matching_loss, true_false_pair_scores
from lib.tasks.common import AnnotatedTask, Predictor, Task, clip_dataset, eval_batches, model_device
from lib.tasks.registry import register_task

VTM_TASK = "vtm"  # the task token of the true/false layouts (lib.model.layouts.vtm)
TF_SCORES = {
    "prob": "2-way softmax over the 'true'/'false' logits",
    "ratio": "the reference's raw-logit ratio l_true / (l_true + l_false)",
}


class MatchPredictor(Predictor):
    """Video-text matching scores: "true" vs "false" at the [MASK] after the text (:func:`layouts.vtm`).

    Settings: ``size_txt``, ``tf_score`` ("prob" or the reference's "ratio"), ``pair_batch`` (fusion rows per
    pass). Rankings use the log-odds of "true" (never a tie where p rounds to 1.0); :meth:`predict` reports
    p("true")."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)
        self.tf_score = self.settings.get("tf_score", "prob")
        self.pair_batch = int(self.settings.get("pair_batch", 256))

    def video_side(self, feats: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | FusionContext:
        """What the pairs are fused with: the videos' tokens, or, where video ignores text, their fused
        keys/values computed once for every text (:meth:`LavenderModel.fusion_context`)."""
        return self.model.fusion_context(feats, masks, VTM_TASK) if self.model.shares_video("full") else feats

    def pair_scores(
        self,
        texts: Sequence[str],
        video: torch.Tensor | FusionContext,
        masks: torch.Tensor | None,
        text_of: torch.Tensor,
        video_of: torch.Tensor,
        probability: bool = False,
    ) -> torch.Tensor:
        """The score of each (``texts[text_of[i]]``, video ``video_of[i]``) pair, ``pair_batch`` fusion rows
        at a time: the ranking score, or p("true") with ``probability`` (under ``tf_score`` "prob")."""
        if probability and self.tf_score == "prob":
            score = layouts.true_false_prob
        else:
            score = layouts.true_false_ranker(self.tf_score)
        layout = layouts.vtm(self.tok, list(texts), int(self.settings["size_txt"]))
        return true_false_pair_scores(
            self.model, layout, video, masks, text_of, video_of, score, self.true_id, self.false_id,
            self.pair_batch,
        )  # fmt: skip

    def score_matrix(
        self, texts: Sequence[str], video: torch.Tensor | FusionContext, masks: torch.Tensor | None = None
    ) -> np.ndarray:
        """(len(texts), n_videos) ranking scores of every text against every video (``video``: tokens with
        ``masks``, or a FusionContext from :meth:`video_side`)."""
        n_v = len(video)
        text_of = torch.arange(len(texts)).repeat_interleave(n_v)
        video_of = torch.arange(n_v).repeat(len(texts))
        return self.pair_scores(texts, video, masks, text_of, video_of).view(len(texts), n_v).numpy()

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """``{"score": p("true")}`` of each row's ``text`` with its video."""
        index = torch.arange(len(inputs))
        texts = [row["text"] for row in inputs]
        scores = self.pair_scores(texts, feat, mask, index, index, probability=True)
        return [{"score": float(s)} for s in scores]


@register_task("retrieval", aliases=("match",))
class RetrievalTask(AnnotatedTask):
    annotation_format = "retrieval"
    predictor = MatchPredictor

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        base = super().inference_entry(cfg, task) or {}
        return {**base, "tf_score": cfg.tf_score, "pair_batch": cfg.eval_pair_batch}

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        return (
            "text-to-video retrieval: every caption of the split ranked against every video of the split by "
            "the fusion encoder (a full cross-encoder ranking); the score is the true/false score at the "
            f"[MASK] after the text ({TF_SCORES.get(entry.get('tf_score', 'prob'), '')}); R@1/5/10, median "
            "and mean rank, text-to-video and video-to-text"
        )

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        video, text, matched = layouts.vtm_pairs(len(items), self.cfg.vtm_negatives, rng)
        layout = layouts.vtm(self.tok, [texts[j] for j in text], self.cfg.size_txt, matched)
        return {
            "video": stack_clips(items),
            "layout": layout,
            "pair_video": torch.tensor(video),
            "ids": [item["id"] for item in items],
        }

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(batch["video"].to(model_device(model)))
        return matching_loss(model, feat, mask, batch["layout"], batch["pair_video"])

    # ---- evaluation

    def encode_videos(self, model, records) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Every distinct video of ``records`` encoded once (shared by all ranks), in first-seen order."""
        dataset = clip_dataset(self.cfg, self.store, records, train=False, videos_only=True)
        device = model_device(model)
        local = []
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            feat, mask = model.encode_video(stack_clips(batch).to(device))
            local += [(f.cpu(), m.cpu()) for f, m in zip(feat, mask)]
        pairs = D.gather_eval(local)
        feats = torch.stack([f for f, _ in pairs]).to(device)
        masks = torch.stack([m for _, m in pairs]).to(device)
        return list(dataset.videos), feats, masks

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        started = time.perf_counter()
        videos, feats, masks = self.encode_videos(model, records)
        predictor = self.make_predictor(model)
        video = predictor.video_side(feats, masks)  # once for every chunk of texts
        encoded = time.perf_counter()
        column = {v: i for i, v in enumerate(videos)}
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        text_to_video = [column[r.video] for r in records]
        mine = list(D.eval_shard_range(len(texts)))
        rows = []
        for start in range(0, len(mine), max(1, self.cfg.size_batch)):
            chunk = mine[start : start + max(1, self.cfg.size_batch)]
            rows += list(predictor.score_matrix([texts[i] for i in chunk], video, masks))
        scores = np.stack(D.gather_eval(rows)) if texts else np.zeros((0, len(videos)))
        elapsed = time.perf_counter() - started
        metrics = retrieval_metrics(scores, text_to_video)
        n_pairs = scores.size
        metrics.update(
            n_texts=len(texts),
            n_videos=len(videos),
            video_encode_s=encoded - started,
            ms_per_pair=1000 * (elapsed - (encoded - started)) / max(1, n_pairs),
        )
        return metrics
