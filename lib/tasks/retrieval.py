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
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lib.data.annotations import CaptionItem
from lib.data.datasets import stack_clips
from lib.engine import distributed as D
from lib.metrics.retrieval import retrieval_metrics
from lib.model import lavender, layouts
from lib.tasks.common import (
    AnnotatedTask,
    clip_dataset,
    eval_batches,
    logits_at,
    model_device,
    supervised_labels,
    true_false_pair_scores,
)

VTM_TASK = "vtm"  # the task token of the true/false layouts (lib.model.layouts.vtm)


def caption_text(item: CaptionItem, train: bool, rng: random.Random) -> str:
    """A paragraph's sentences: a random non-empty ordered subset in training (Frozen-style), all in eval."""
    sentences = [s for s in item.sentences if s.strip()] or list(item.sentences)
    if not train or len(sentences) == 1:
        return " ".join(sentences)
    k = rng.randint(1, len(sentences))
    keep = sorted(rng.sample(range(len(sentences)), k))
    return " ".join(sentences[i] for i in keep)


def vtm_pairs(n: int, n_neg: int, rng: random.Random) -> tuple[list[int], list[int], list[bool]]:
    """For each video i: (i, own text, True) then ``n_neg`` (i, text of another sample, False)."""
    video, text, matched = [], [], []
    n_neg = min(n_neg, n - 1)
    for i in range(n):
        others = [j for j in range(n) if j != i]
        for j in [i, *rng.sample(others, n_neg)]:
            video.append(i)
            text.append(j)
            matched.append(j == i)
    return video, text, matched


def vtm_loss(model, video: torch.Tensor, layout: layouts.Layout, pair_video: torch.Tensor) -> dict:
    """Encode the batch's videos once, then :func:`vtm_loss_on_features`."""
    feat, mask = model.encode_video(video)
    return vtm_loss_on_features(model, feat, mask, layout, pair_video)


def vtm_loss_on_features(
    model, feat: torch.Tensor, mask: torch.Tensor, layout: layouts.Layout, pair_video: torch.Tensor
) -> dict:
    """Cross-entropy at the [MASK] of every (video, text) pair (row i uses video ``pair_video[i]``);
    also the matching accuracy."""
    logits = logits_at(model, feat, mask, layout, video_index=pair_video.to(feat.device))
    labels = supervised_labels(layout).to(logits.device)
    loss = F.cross_entropy(logits.float(), labels)
    return {"loss": loss, "acc": (logits.argmax(-1) == labels).float().mean()}


class RetrievalTask(AnnotatedTask):
    family = "retrieval"
    kind = "retrieval"

    def __init__(self, cfg, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        video, text, matched = vtm_pairs(len(items), self.cfg.vtm_negatives, rng)
        layout = layouts.vtm(self.tok, [texts[j] for j in text], self.cfg.size_txt, matched)
        return {
            "video": stack_clips(items),
            "layout": layout,
            "pair_video": torch.tensor(video),
            "ids": [item["id"] for item in items],
        }

    def step(self, model, batch: dict[str, Any]) -> dict:
        return vtm_loss(model, batch["video"].to(model_device(model)), batch["layout"], batch["pair_video"])

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

    def video_side(
        self, model, feats: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor | lavender.FusionContext:
        """What the pairs are fused with: the videos' tokens, or, where video ignores text, their fused
        keys/values computed once for every text (:meth:`LavenderModel.fusion_context`)."""
        return model.fusion_context(feats, masks, VTM_TASK) if model.shares_video("full") else feats

    def score_pairs(
        self,
        model,
        texts: list[str],
        feats: torch.Tensor | lavender.FusionContext,
        masks: torch.Tensor | None = None,
    ) -> np.ndarray:
        """(len(texts), n_videos) true/false scores, ``eval_pair_batch`` fusion rows at a time; ``feats``:
        video tokens with ``masks``, or a FusionContext (:meth:`video_side`)."""
        n_v = len(feats)
        layout = layouts.vtm(self.tok, texts, self.cfg.size_txt)
        out = true_false_pair_scores(
            model,
            layout,
            feats,
            masks,
            torch.arange(len(texts)).repeat_interleave(n_v),
            torch.arange(n_v).repeat(len(texts)),
            layouts.true_false_ranker(self.cfg.tf_score),
            self.true_id,
            self.false_id,
            self.cfg.eval_pair_batch,
        )
        return out.view(len(texts), n_v).numpy()

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        started = time.perf_counter()
        videos, feats, masks = self.encode_videos(model, records)
        video = self.video_side(model, feats, masks)  # once for every chunk of texts
        encoded = time.perf_counter()
        column = {v: i for i, v in enumerate(videos)}
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        text_to_video = [column[r.video] for r in records]
        mine = list(D.eval_shard_range(len(texts)))
        rows = []
        for start in range(0, len(mine), max(1, self.cfg.size_batch)):
            chunk = mine[start : start + max(1, self.cfg.size_batch)]
            rows += list(self.score_pairs(model, [texts[i] for i in chunk], video, masks))
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
