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
from lib.data.audio import audio_tsv_path
from lib.data.datasets import stack_clips
from lib.data.embedding_cache import EmbeddingCache, model_fingerprint, store_fingerprint
from lib.engine import distributed as D
from lib.engine.config import Config, ConfigError
from lib.metrics.retrieval import retrieval_metrics
from lib.model import layouts
from lib.model.bert import FusionContext
from lib.model.contrastive import info_nce, sample_hard_negatives
from lib.model.mlm import matching_loss, true_false_pair_scores
from lib.model.shortlist import dual_softmax, two_stage
from lib.tasks.common import (
    AnnotatedTask,
    Predictor,
    Task,
    clip_dataset,
    clip_settings,
    context_modalities,
    eval_batches,
    fbank_config,
    model_device,
    on_device,
)
from lib.tasks.registry import register_task

RANKS_AT = (1, 5, 10, 50)
VTM_TASK = "vtm"  # the task token of the true/false layouts (lib.model.layouts.vtm)
TF_SCORES = {
    "prob": "2-way softmax over the 'true'/'false' logits",
    "ratio": "the reference's raw-logit ratio l_true / (l_true + l_false)",
}


class MatchPredictor(Predictor):
    """Video-text matching scores: "true" vs "false" at the [MASK] after the text (:func:`layouts.vtm`).

    Settings: ``size_txt``, ``tf_score`` ("prob" or the reference's "ratio"), ``pair_batch`` (fusion rows per
    pass), ``retrieval_mode`` / ``rerank_k`` / ``dual_softmax`` (:meth:`rank`). Rankings use the log-odds of
    "true" (never a tie where p rounds to 1.0); :meth:`predict` reports p("true"). With a contrastive head
    (``contrastive_dim``) it also ranks by embeddings alone ("dual") or re-ranks their shortlist
    ("rerank")."""

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

    def context(self, video: torch.Tensor | FusionContext, masks: torch.Tensor | None) -> FusionContext:
        """The videos encoded on their own by the fusion encoder (what the embeddings pool)."""
        if isinstance(video, FusionContext) and video.states is not None:
            return video
        return self.model.fusion_context(video, masks, VTM_TASK)

    def text_embeddings(self, texts: Sequence[str], batch: int = 256) -> torch.Tensor:
        """(T, d) contrastive embeddings of the texts."""
        out = []
        device = next(self.model.parameters()).device
        for start in range(0, len(texts), batch):
            layout = layouts.plain_text(
                self.tok, list(texts[start : start + batch]), int(self.settings["size_txt"])
            )
            out.append(self.model.text_embedding(layout.ids.to(device), layout.mask.to(device)))
        return torch.cat(out) if out else torch.zeros(0, 1)

    def rank(
        self,
        texts: Sequence[str],
        video: torch.Tensor | FusionContext,
        masks: torch.Tensor | None = None,
        mode: str | None = None,
        k: int | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """(len(texts), n_videos) scores that rank the videos for each text in ``mode`` (default: the
        settings'): "full" = :meth:`score_matrix`; "dual" = embedding similarities; "rerank" = each text's
        top ``k`` by similarity re-scored by the matching head, above the rest. Also the cost: fusion pairs
        and seconds per stage."""
        mode = mode or self.settings.get("retrieval_mode", "full")
        if mode == "full":
            started = time.perf_counter()
            scores = self.score_matrix(texts, video, masks)
            return scores, {"fusion_pairs": float(scores.size), "rerank_s": time.perf_counter() - started}
        started = time.perf_counter()
        context = self.context(video, masks)
        sim = (self.text_embeddings(texts) @ self.model.video_embedding(context).T).double().cpu().numpy()
        if self.settings.get("dual_softmax"):
            sim = dual_softmax(sim)
        cost = {"embed_s": time.perf_counter() - started, "fusion_pairs": 0.0}
        if mode == "dual":
            return sim, cost
        k = int(k or self.settings.get("rerank_k", 16))
        started = time.perf_counter()

        def rescore(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            fused = context if self.model.shares_video("full") else video
            pairs = self.pair_scores(texts, fused, masks, torch.from_numpy(rows), torch.from_numpy(cols))
            return pairs.numpy()

        scores, n_pairs = two_stage(sim, k, rescore)
        return scores, {**cost, "fusion_pairs": float(n_pairs), "rerank_s": time.perf_counter() - started}

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

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.uses_vtc = cfg.vtc_weight > 0 or cfg.vtm_negatives_from == "vtc"
        if (self.uses_vtc or cfg.retrieval_mode != "full") and cfg.contrastive_dim <= 0:
            raise ConfigError(
                f"{self.name}: vtc_weight / vtm_negatives_from vtc / retrieval_mode {cfg.retrieval_mode} "
                "need the contrastive head: set contrastive_dim (e.g. 256)"
            )

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        base = super().inference_entry(cfg, task) or {}
        return {
            **base,
            "tf_score": cfg.tf_score,
            "pair_batch": cfg.eval_pair_batch,
            "retrieval_mode": cfg.retrieval_mode,
            "rerank_k": cfg.rerank_k,
            "dual_softmax": cfg.dual_softmax,
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        tf = TF_SCORES.get(entry.get("tf_score", "prob"), "")
        how = {
            "full": "every caption of the split ranked against every video of the split by the fusion "
            "encoder (a full cross-encoder ranking); the score is the true/false score at the [MASK] after "
            f"the text ({tf})",
            "dual": "every caption ranked against every video by the dot product of their contrastive "
            "embeddings (no fusion pass)",
            "rerank": f"each caption's top {entry.get('rerank_k')} videos by the dot product of the "
            f"contrastive embeddings re-scored by the matching head ({tf}) and ranked above the rest (and "
            "the same for each video's captions)",
        }[entry.get("retrieval_mode", "full")]
        return f"text-to-video retrieval: {how}; R@1/5/10/50, median and mean rank, both directions"

    # ---- training

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [caption_text(item["record"], True, rng) for item in items]
        video, text, matched = layouts.vtm_pairs(len(items), self.cfg.vtm_negatives, rng)
        batch = {"video": stack_clips(items), "ids": [item["id"] for item in items]}
        if self.cfg.vtm_negatives_from == "batch":
            layout = layouts.vtm(self.tok, [texts[j] for j in text], self.cfg.size_txt, matched)
            batch.update(layout=layout, pair_video=torch.tensor(video))
        if self.uses_vtc:
            batch.update(texts=texts, text=layouts.plain_text(self.tok, texts, self.cfg.size_txt))
        return batch

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(on_device(batch["video"], model_device(model)))
        if not self.uses_vtc:
            return matching_loss(model, feat, mask, batch["layout"], batch["pair_video"])
        context = model.fusion_context(feat, mask, VTM_TASK)  # the videos on their own: pooled for VTC
        video = model.video_embedding(context)
        layout = batch["text"].to(feat.device)
        text = model.text_embedding(layout.ids, layout.mask)
        vtc = info_nce(video, text, model.vtc.temperature(), self.cfg.vtc_gather)
        if self.cfg.vtm_negatives_from == "vtc":
            layout, pair_video = self.hard_pairs(batch["texts"], video.detach(), text.detach())
        else:
            layout, pair_video = batch["layout"], batch["pair_video"]
        fused = context if model.shares_video("full") else feat  # a prefix-masked fusion reuses the pass
        vtm = matching_loss(model, fused, mask, layout, pair_video)
        return {
            "loss": vtm["loss"] + self.cfg.vtc_weight * vtc["loss"],
            "acc": vtm["acc"],
            "vtm_loss": vtm["loss"].detach(),
            "vtc_loss": vtc["loss"].detach(),
            "vtc_acc": vtc["acc"],
        }

    def hard_pairs(
        self, texts: list[str], video: torch.Tensor, text: torch.Tensor
    ) -> tuple[layouts.Layout, torch.Tensor]:
        """ALPRO's VTM batch: every (video, own text) pair, plus for each video a negative text and for each
        text a negative video, drawn from the softmax of their contrastive similarities (self excluded)."""
        sim = video @ text.T
        neg_text = sample_hard_negatives(sim).tolist()
        neg_video = sample_hard_negatives(sim.T).tolist()
        n = len(texts)
        pair_video = [*range(n), *range(n), *neg_video]
        pair_text = [*range(n), *neg_text, *range(n)]
        matched = [True] * n + [False] * (2 * n)
        layout = layouts.vtm(self.tok, [texts[j] for j in pair_text], self.cfg.size_txt, matched)
        return layout, torch.tensor(pair_video)

    # ---- evaluation

    def encode_videos(self, model, records) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Every distinct video of ``records`` encoded once (shared by all ranks), in first-seen order."""
        dataset = clip_dataset(self.cfg, self.store, records, train=False, videos_only=True)
        device = model_device(model)
        local = []
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            feat, mask = model.encode_video(on_device(stack_clips(batch), device))
            local += [(f.cpu(), m.cpu()) for f, m in zip(feat, mask)]
        pairs = D.gather_eval(local)
        feats = torch.stack([f for f, _ in pairs]).to(device)
        masks = torch.stack([m for _, m in pairs]).to(device)
        return list(dataset.videos), feats, masks

    def evaluate(self, model, split: str) -> dict[str, float]:
        """Retrieval in ``retrieval_mode``: text -> video over this rank's share of the texts, video -> text
        (rerank: each video's own shortlist of texts) over its share of the videos, gathered."""
        records = self.ann[split]
        if self.cfg.retrieval_mode == "dual" and self.cfg.embedding_cache:
            return self.evaluate_cached_dual(model, records)
        started = time.perf_counter()
        videos, feats, masks = self.encode_videos(model, records)
        predictor = self.make_predictor(model)
        video = predictor.video_side(feats, masks)  # once for every chunk of texts
        encoded = time.perf_counter()
        column = {v: i for i, v in enumerate(videos)}
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        text_to_video = [column[r.video] for r in records]
        mode = self.cfg.retrieval_mode
        cost = {"fusion_pairs": 0.0, "embed_s": 0.0, "rerank_s": 0.0}  # the same keys on every rank

        def add(found: dict[str, float]) -> None:
            for key, value in found.items():
                cost[key] = cost.get(key, 0.0) + value

        mine = list(D.eval_shard_range(len(texts)))
        step = max(1, self.cfg.size_batch) if mode == "full" else max(1, len(mine))
        rows = []
        for start in range(0, len(mine), step):
            chunk = mine[start : start + step]
            scores, found = predictor.rank([texts[i] for i in chunk], video, masks, mode)
            rows += list(scores)
            add(found)
        t2v = np.stack(D.gather_eval(rows)) if texts else np.zeros((0, len(videos)))
        v2t = t2v
        if mode == "rerank":  # video -> text: each video's top-k texts re-scored (this rank's videos)
            v2t = self.rerank_videos(predictor, model, texts, video, masks, add)
        elapsed = time.perf_counter() - started
        metrics = retrieval_metrics(t2v, text_to_video, ks=RANKS_AT)
        metrics.update(
            {
                k: v
                for k, v in retrieval_metrics(v2t, text_to_video, ks=RANKS_AT).items()
                if k.startswith("v2t")
            }
        )
        # pairs add up over the ranks; a stage's seconds are its slowest rank's
        totals = {
            k: float((sum if k == "fusion_pairs" else max)(D.all_gather_object(v))) for k, v in cost.items()
        }
        metrics.update(
            n_texts=len(texts),
            n_videos=len(videos),
            video_encode_s=encoded - started,
            ms_per_pair=1000 * (elapsed - (encoded - started)) / max(1, t2v.size),
            **totals,
        )
        return metrics

    def evaluate_cached_dual(self, model, records) -> dict[str, float]:
        """Retrieval by embeddings with the gallery's video embeddings from ``embedding_cache`` (encoded and
        stored on a miss): a second run with the same checkpoint and frame store encodes no video."""
        started = time.perf_counter()
        videos = list(clip_dataset(self.cfg, self.store, records, train=False, videos_only=True).videos)
        cache = EmbeddingCache(self.cfg.embedding_cache)
        settings, paths = clip_settings(self.cfg), list(self.store.paths)
        modalities = context_modalities(self.cfg)
        if modalities != ("video",):  # the audio (and which modalities) make the embedding too
            settings = {**settings, "modalities": list(modalities), "audio": str(fbank_config(self.cfg))}
            paths += [audio_tsv_path(p) for p in self.store.paths]
        key = cache.key(model_fingerprint(model), store_fingerprint(paths), settings, videos)
        video_emb = cache.get(key, videos)
        encoded = 0
        if video_emb is None:
            _, feats, masks = self.encode_videos(model, records)
            video_emb = model.video_embedding(feats, masks).float().cpu()
            encoded = len(videos)
            if D.is_main():
                cache.put(key, videos, video_emb)
        predictor = self.make_predictor(model)
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        mine = list(D.eval_shard_range(len(texts)))
        local = predictor.text_embeddings([texts[i] for i in mine]).float().cpu() if mine else None
        text_emb = torch.cat([t for t in D.all_gather_object(local) if t is not None])
        sim = (text_emb @ video_emb.T).double().numpy()
        if self.cfg.dual_softmax:
            sim = dual_softmax(sim)
        column = {v: i for i, v in enumerate(videos)}
        metrics = retrieval_metrics(sim, [column[r.video] for r in records], ks=RANKS_AT)
        metrics.update(
            n_texts=len(texts),
            n_videos=len(videos),
            videos_encoded=float(encoded),
            fusion_pairs=0.0,
            seconds=time.perf_counter() - started,
        )
        return metrics

    def rerank_videos(self, predictor, model, texts, video, masks, add) -> np.ndarray:
        """(T, V) scores whose columns rank each video's texts: its top ``rerank_k`` texts by similarity
        re-scored by the matching head, above the rest (videos shared out over the ranks)."""
        context = predictor.context(video, masks)
        sim = (predictor.text_embeddings(texts) @ model.video_embedding(context).T).double().cpu().numpy()
        if self.cfg.dual_softmax:
            sim = dual_softmax(sim)
        mine = list(D.eval_shard_range(sim.shape[1]))
        fused = context if model.shares_video("full") else video
        started = time.perf_counter()

        def rescore(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:  # rows: videos (mine), cols: texts
            video_of = torch.tensor([mine[r] for r in rows])
            return predictor.pair_scores(texts, fused, masks, torch.from_numpy(cols), video_of).numpy()

        part, n_pairs = two_stage(sim.T[mine], self.cfg.rerank_k, rescore)
        add({"fusion_pairs": float(n_pairs), "rerank_s": time.perf_counter() - started})
        return np.concatenate(D.gather_eval([part]), axis=0).T
