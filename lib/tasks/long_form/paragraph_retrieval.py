"""Paragraph-to-video retrieval (ActivityNet Captions, DiDeMo, LF-VILA's downstream): a paragraph of
sentences against long videos read as ``long_clips`` consecutive clips.

Training (``long_stage``):

* 1, LF-VILA's stage 1 (the dual path): global video-paragraph InfoNCE + ``mtc_weight`` x MTC between clip k
  and sentence k (:func:`lib.model.long_form.long_form_losses`): the HTWA Swin's local tap per clip, the
  paragraph encoded hierarchically (sentence layers, then paragraph layers), negatives from every rank.
* 2: the paragraph-level matching [MASK] of the one MLM head ("true" / "false" after the paragraph, each
  video with its own paragraph and ``vtm_negatives`` paragraphs of other videos of its batch), the stage-1
  weights frozen.
* 0: both losses at once, nothing frozen.

Segments: a paragraph is merged to at most ``long_clips`` sentences (LF-VILA's rule,
:func:`lib.data.multi_clip.merge_segments`); with ``long_sampling: timestamps`` clip k lies within
sentence k's span.

Evaluation: every paragraph of the split against every video of the split (each video encoded once, over
the ranks). Ranked by the dual path (dot products of paragraph and video embeddings, no fusion pass) and,
with ``retrieval_mode`` rerank, each paragraph's top ``rerank_k`` videos re-scored by the matching head
(:func:`lib.model.shortlist.two_stage`); ``full`` scores every pair by the matching head. Reported:
text->video R@1/5/10/50, median and mean rank (and video->text of the same matrix), under ``dual/...``,
``rerank/...`` or ``full/...``, and without prefix for ``retrieval_mode`` (dual when it is "full" and the
stage did not train the matching head).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from lib.data.multi_clip import MultiClipDataset, merge_segments, stack_multi_clips
from lib.engine import distributed as D
from lib.engine.config import Config, ConfigError
from lib.metrics.retrieval import retrieval_metrics
from lib.model import layouts
from lib.model.long_form import encode_long_video, encode_paragraph, long_form_losses, paragraph_text
from lib.model.mlm import matching_loss, true_false_pair_scores
from lib.model.shortlist import dual_softmax, two_stage
from lib.tasks.common import Predictor, Task, clip_transform, eval_batches, model_device
from lib.tasks.long_form import LongFormTask
from lib.tasks.registry import register_task

RANKS_AT = (1, 5, 10, 50)
VTM_TASK = "vtm"


def as_segments(paragraph: str | Sequence[str], n_clips: int) -> list[str]:
    """A paragraph (a string = one sentence, or a list of sentences) merged to at most ``n_clips``."""
    sentences = [paragraph] if isinstance(paragraph, str) else list(paragraph)
    if not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
        raise ValueError(f"a paragraph is a non-empty string or a list of them, got {paragraph!r:.80}")
    return merge_segments(sentences, n_clips)[0]


class ParagraphPredictor(Predictor):
    """Paragraph-video scores from encoded videos: the dual path's cosine similarity and the matching
    head's p("true") at the [MASK] after the paragraph; rankings in ``retrieval_mode`` (:meth:`rank`).

    Settings: ``size_txt`` (the flat paragraph of the matching layout), ``size_sentence``, ``max_sentences``,
    ``n_clips``, ``retrieval_mode``, ``rerank_k``, ``pair_batch``, ``tf_score``, ``dual_softmax``."""

    def __init__(self, model, tokenizer, settings: Mapping[str, Any]):
        super().__init__(model, tokenizer, settings)
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)
        self.n_clips = int(self.settings["n_clips"])

    def paragraph_embeddings(self, paragraphs: Sequence[Sequence[str]], batch: int = 64) -> torch.Tensor:
        """(P, d) the paragraphs' [CLS] after the hierarchical text layers, projected (the dual path)."""
        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(paragraphs), batch):
            text = paragraph_text(
                self.tok, paragraphs[start : start + batch], int(self.settings["size_sentence"]),
                int(self.settings["max_sentences"]),
            ).to(device)  # fmt: skip
            out.append(self.model.vtc.text(encode_paragraph(self.model, text)[1]))
        return torch.cat(out) if out else torch.zeros(0, 1)

    def similarity(
        self, paragraphs: Sequence[Sequence[str]], feat: torch.Tensor, mask: torch.Tensor
    ) -> np.ndarray:
        """(P, V) dual-path similarities (VALOR's dual softmax under ``dual_softmax``)."""
        video = self.model.video_embedding(feat, mask)
        sim = (self.paragraph_embeddings(paragraphs) @ video.T).double().cpu().numpy()
        return dual_softmax(sim) if self.settings.get("dual_softmax") else sim

    def pair_scores(
        self,
        paragraphs: Sequence[Sequence[str]],
        feat: torch.Tensor,
        mask: torch.Tensor,
        text_of: torch.Tensor,
        video_of: torch.Tensor,
        probability: bool = False,
    ) -> torch.Tensor:
        """The matching head's score of each (``paragraphs[text_of[i]]``, video ``video_of[i]``) pair: the
        ranking score, or p("true") with ``probability`` (under ``tf_score`` "prob")."""
        tf = self.settings.get("tf_score", "prob")
        score = layouts.true_false_prob if probability and tf == "prob" else layouts.true_false_ranker(tf)
        layout = layouts.vtm(self.tok, [" ".join(p) for p in paragraphs], int(self.settings["size_txt"]))
        return true_false_pair_scores(
            self.model, layout, feat, mask, text_of, video_of, score, self.true_id, self.false_id,
            int(self.settings.get("pair_batch", 256)),
        )  # fmt: skip

    def rank(
        self,
        paragraphs: Sequence[Sequence[str]],
        feat: torch.Tensor,
        mask: torch.Tensor,
        mode: str | None = None,
        sim: np.ndarray | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """(P, V) scores ranking the videos for each paragraph in ``mode`` (default: the settings'): "dual"
        (similarities), "rerank" (each paragraph's top ``rerank_k`` by similarity re-scored by the matching
        head, above the rest), "full" (every pair by the matching head); and the fusion pairs it took."""
        mode = mode or self.settings.get("retrieval_mode", "dual")
        n_p, n_v = len(paragraphs), feat.shape[0]
        if mode == "full":
            text_of = torch.arange(n_p).repeat_interleave(n_v)
            video_of = torch.arange(n_v).repeat(n_p)
            scores = (
                self.pair_scores(paragraphs, feat, mask, text_of, video_of).view(n_p, n_v).double().numpy()
            )
            return scores, {"fusion_pairs": float(n_p * n_v)}
        sim = self.similarity(paragraphs, feat, mask) if sim is None else sim
        if mode == "dual":
            return sim, {"fusion_pairs": 0.0}

        def rescore(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            pairs = self.pair_scores(paragraphs, feat, mask, torch.from_numpy(rows), torch.from_numpy(cols))
            return pairs.numpy()

        scores, n_pairs = two_stage(sim, int(self.settings.get("rerank_k", 16)), rescore)
        return scores, {"fusion_pairs": float(n_pairs)}

    def predict(
        self, feat: torch.Tensor, mask: torch.Tensor, inputs: Sequence[Mapping[str, Any]], **options: Any
    ) -> list[dict[str, Any]]:
        """``{"similarity", "score"}`` of each row's ``paragraph`` (a string or a list of sentences) with its
        video: the dual path's cosine similarity and the matching head's p("true")."""
        paragraphs = [as_segments(row["paragraph"], self.n_clips) for row in inputs]
        index = torch.arange(len(inputs))
        video = self.model.video_embedding(feat, mask)
        sims = (self.paragraph_embeddings(paragraphs) * video).sum(-1).tolist()
        scores = self.pair_scores(paragraphs, feat, mask, index, index, probability=True).tolist()
        return [{"similarity": s, "score": p} for s, p in zip(sims, scores)]


@register_task("paragraph-retrieval", aliases=("paragraph_retrieval",))
class ParagraphRetrievalTask(LongFormTask):
    annotation_format = "paragraph"
    predictor = ParagraphPredictor

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        if cfg.contrastive_dim <= 0 or cfg.long_form_dim <= 0:
            raise ConfigError(
                f"{self.name}: paragraph retrieval ranks by the dual path: set contrastive_dim and "
                "long_form_dim (e.g. 256) and an HTWA Swin (vis_temporal_windows)"
            )
        if self.n_clips > cfg.max_sentences:
            raise ConfigError(
                f"{self.name}: long_clips={self.n_clips} exceeds max_sentences={cfg.max_sentences}"
            )

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        mode = cfg.retrieval_mode
        if mode == "full" and cfg.long_stage == 1:
            mode = "dual"  # stage 1 trains no matching head
        return {
            **cls.long_settings(cfg),
            "size_sentence": cfg.long_size_sentence,
            "max_sentences": cfg.max_sentences,
            "retrieval_mode": mode,
            "rerank_k": cfg.rerank_k,
            "pair_batch": cfg.eval_pair_batch,
            "tf_score": cfg.tf_score,
            "dual_softmax": cfg.dual_softmax,
        }

    @classmethod
    def protocol(cls, entry: Mapping[str, Any]) -> str:
        how = {
            "dual": "by the dot product of paragraph and video embeddings (the dual path, no fusion pass)",
            "rerank": f"each paragraph's top {entry.get('rerank_k')} videos by the dual path re-scored by "
            "the matching head at the [MASK] after the paragraph",
            "full": "every pair scored by the matching head at the [MASK] after the paragraph",
        }[entry.get("retrieval_mode", "dual")]
        clips = f"{entry.get('n_clips')} clips x {entry.get('frames_per_clip')} frames over the whole video"
        return (
            f"paragraph-to-video retrieval ({clips}): every paragraph ranked against every video {how}; "
            "R@1/5/10/50, median and mean rank"
        )

    def dataset(self, records: Sequence[Any], train: bool) -> MultiClipDataset:
        transform = clip_transform(self.cfg, train)
        return MultiClipDataset(
            self.store, records, self.n_clips, self.frames_per_clip, transform, self.cfg.long_sampling
        )

    # ---- training

    def train_stream(self):
        if "train" not in self.ann.splits or not len(self.ann["train"]):
            return None
        return self.make_stream(self.name, self.dataset(self.ann["train"], train=True))

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        video, clip_index = stack_multi_clips(items)
        segments = [item["segments"] for item in items]
        batch: dict[str, Any] = {
            "video": video,
            "clip_index": clip_index,
            "ids": [item["id"] for item in items],
        }
        if self.trains_dual():
            batch["paragraph"] = paragraph_text(
                self.tok, segments, self.cfg.long_size_sentence, self.cfg.max_sentences
            )
        if self.trains_mlm():
            rng = random.Random(random.getrandbits(64))
            pair_video, text, matched = layouts.vtm_pairs(len(items), self.cfg.vtm_negatives, rng)
            flat = [" ".join(segments[j]) for j in text]
            batch.update(
                layout=layouts.vtm(self.tok, flat, self.cfg.size_txt, matched),
                pair_video=torch.tensor(pair_video),
            )
        return batch

    def step(self, model, batch: dict[str, Any]) -> dict:
        device = model_device(model)
        img, clip_index = batch["video"].to(device), batch["clip_index"].to(device)
        frame_mask = clip_index >= 0
        out: dict[str, torch.Tensor] = {}
        loss = None
        if self.trains_dual():
            video = encode_long_video(model, img, clip_index, self.n_clips, frame_mask)
            cfg = self.cfg
            out = long_form_losses(
                model, video, batch["paragraph"].to(device), cfg.mtc_weight, cfg.vtc_gather,
                num_key=cfg.mtc_num_key, num_value=cfg.mtc_num_value, num_other=cfg.mtc_num_other,
            )  # fmt: skip
            loss = out["loss"]
            tokens, mask = video.tokens, video.mask
        else:
            tokens, mask = model.encode_video(img, frame_mask)
        if self.trains_mlm():
            matching = matching_loss(model, tokens, mask, batch["layout"], batch["pair_video"])
            loss = matching["loss"] if loss is None else loss + matching["loss"]
            out.update(vtm_loss=matching["loss"].detach(), vtm_acc=matching["acc"])
        return {**out, "loss": loss}

    # ---- evaluation

    def encode_videos(self, model, records: Sequence[Any]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
        """Every distinct video of ``records`` (with its first paragraph's spans) encoded once over the
        ranks, shared by all; in first-seen order."""
        firsts: dict[str, Any] = {}
        for record in records:
            firsts.setdefault(record.video, record)
        dataset = self.dataset(list(firsts.values()), train=False)
        device = model_device(model)
        local = []
        for items in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            img, clip_index = stack_multi_clips(items)
            feat, mask = model.encode_video(img.to(device), (clip_index >= 0).to(device))
            local += [(f.cpu(), m.cpu()) for f, m in zip(feat, mask)]
        pairs = D.gather_eval(local)
        feats = torch.stack([f for f, _ in pairs]).to(device)
        masks = torch.stack([m for _, m in pairs]).to(device)
        return list(firsts), feats, masks

    def evaluate(self, model, split: str) -> dict[str, float]:
        records = self.ann[split]
        started = time.perf_counter()
        videos, feats, masks = self.encode_videos(model, records)
        column = {v: i for i, v in enumerate(videos)}
        truth = [column[r.video] for r in records]
        paragraphs = [merge_segments(r.sentences, self.n_clips)[0] for r in records]
        predictor = self.make_predictor(model)
        main = predictor.settings["retrieval_mode"]
        mine = list(D.eval_shard_range(len(paragraphs)))
        mine_paragraphs = [paragraphs[i] for i in mine]
        sim = predictor.similarity(mine_paragraphs, feats, masks) if mine else None
        metrics: dict[str, float] = {}
        for mode in dict.fromkeys(["dual", main]):
            rows, cost = (
                predictor.rank(mine_paragraphs, feats, masks, mode, sim)
                if mine
                else (np.zeros((0, len(videos))), {"fusion_pairs": 0.0})
            )
            scores = np.concatenate(D.gather_eval([rows]), axis=0)
            found = retrieval_metrics(scores, truth, ks=RANKS_AT)
            found["fusion_pairs"] = float(sum(D.all_gather_object(cost["fusion_pairs"])))
            metrics.update({f"{mode}/{k}": v for k, v in found.items()})
            if mode == main:
                metrics.update(found)
        metrics.update(
            n_texts=float(len(records)), n_videos=float(len(videos)), seconds=time.perf_counter() - started
        )
        return metrics
