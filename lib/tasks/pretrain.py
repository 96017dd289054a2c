"""Pretraining (LAVENDER, reference §2.1): masked-token modelling + video-text matching, both through the
ONE MLM head, summed with equal weight (``pretrain_tasks``: any of "mtm", "vtm").

* MTM: ``[CLS] w… [SEP] [PAD]…`` (``size_txt``) with each non-special token replaced by ``[MASK]`` with
  probability ``p_mask`` (:func:`lib.model.layouts.mlm_mask`); cross-entropy at the masked positions only
  (the head runs on those rows, never on the whole sequence).
* VTM: every video with its own text ("true") and ``vtm_negatives`` texts of other samples ("false") at
  a ``[MASK]`` after the padding (:func:`lib.model.layouts.vtm`, pairs from
  :func:`lib.model.layouts.vtm_pairs`). The texts are the clean ones (the reference reused its
  MLM-corrupted texts, a side effect of sharing features; clean texts are what matching is evaluated on).
  Negatives come from the rank's batch (reference); ``vtm_negatives_global: true`` draws them from the
  texts of every rank's batch instead (the texts are all-gathered in the step, so every rank must run
  the same stream at each step, which the engine guarantees).

Each video is encoded once per batch and its tokens serve both objectives.

Data, per dataset of ``dataset`` (a name or a list, e.g. ``["webvid2.5m", "cc3m"]``):
``txt_{dataset}.json`` (``{"train": {video: [captions]}, "val": {…}}``) and the frames either in shards
``{dataset}_train_{0..size_part-1}.tsv`` (+ ``{dataset}_val.tsv`` when present; VIOLET's names
``img_{dataset}_train_{k}.tsv`` / ``img_{dataset}_val.tsv`` work too) or in one
``img_{dataset}.tsv``, under ``img_tsv_dir`` (or ``data_dir``). Items are the annotated videos present in
the frame tables (the rest are dropped with a warning: a run may use a subset of the shards). Training
uses a random caption of each video, evaluation its first. Each dataset is its own training stream, so a
batch never mixes datasets; images are one-frame rows and become one-frame clips (T = 1). A one-frame row
inside a video dataset is repeated to the batch's frame count.

The reference trained dataset after dataset and shard after shard (a checkpoint per shard); here every
stream is drawn from at each step (``task_sampling: size`` gives each dataset steps in proportion to its
size, i.e. one pass over everything per epoch).

Validation (per dataset): masked-token accuracy (a fixed masking per item) and matching accuracy (the
positive ranks first, strictly, among itself and ``vtm_negatives`` fixed negatives with a different text,
by the true/false score). Every item is evaluated on exactly one rank.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.data.annotations import AnnotationFile, PretrainItem, RecordList, load_annotations
from lib.data.datasets import VideoStore, stack_clips_padded
from lib.data.tsv import shard_paths
from lib.engine import distributed as D
from lib.engine.config import Config
from lib.engine.trainer import TrainStream
from lib.model import layouts
from lib.model.mlm import logits_at, masked_token_logits, masked_token_loss, matching_loss
from lib.tasks.common import Task, clip_dataset, eval_batches, model_device, on_device, open_store, txt_path
from lib.tasks.registry import get_task, register_task

logger = logging.getLogger(__name__)

OBJECTIVES = ("mtm", "vtm")


# ------------------------------------------------------------------------------------------ objectives


def mlm_layout(
    tok, texts: list[str], size_txt: int, p: float, generators: list[torch.Generator] | None = None
) -> layouts.Layout:
    """MTM input: :func:`layouts.plain_text` corrupted by :func:`layouts.mlm_mask`. ``generators``
    (one per text) make the masking of every row reproducible on its own (evaluation)."""
    base = layouts.plain_text(tok, texts, size_txt)
    special = layouts.special_ids(tok)
    if generators is None:
        ids, labels = layouts.mlm_mask(base.ids, special, tok.mask_token_id, p)
    else:
        rows = [
            layouts.mlm_mask(base.ids[i : i + 1], special, tok.mask_token_id, p, generator=g)
            for i, g in enumerate(generators)
        ]
        ids, labels = torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
    return layouts.Layout(ids, base.mask, labels)


def global_vtm_pairs(
    texts: list[str], n_neg: int, rng: random.Random
) -> tuple[list[int], list[str], list[bool]]:
    """VTM pairs whose negatives come from every rank's batch: (local video, text, matched) per pair.

    The ranks' texts are all-gathered (a collective: every rank must call this at the same step); video
    ``i`` of this rank gets its own text and ``n_neg`` texts drawn from all the others.
    """
    everyone = D.all_gather_object(list(texts))
    pool = [t for part in everyone for t in part]
    offset = sum(len(part) for part in everyone[: D.get_rank()])
    n_neg = min(n_neg, len(pool) - 1)
    video, pair_texts, matched = [], [], []
    for i in range(len(texts)):
        own = offset + i
        others = rng.sample(range(len(pool) - 1), n_neg)  # indices into the pool without `own`
        for j in [own, *(o + (o >= own) for o in others)]:
            video.append(i)
            pair_texts.append(pool[j])
            matched.append(j == own)
    return video, pair_texts, matched


def matching_candidates(texts: list[str], n_neg: int, seed: int) -> list[list[int]]:
    """Per item: itself, then up to ``n_neg`` other items with a different text (fixed by ``seed``)."""
    out = []
    for i, text in enumerate(texts):
        others = [j for j, t in enumerate(texts) if t != text]
        rng = np.random.default_rng([seed, i])
        picked = rng.choice(len(others), size=min(n_neg, len(others)), replace=False) if others else []
        out.append([i, *(others[p] for p in picked)])
    return out


# ------------------------------------------------------------------------------------------------ data


def dataset_names(cfg: Config) -> list[str]:
    names = cfg.dataset if isinstance(cfg.dataset, list) else [cfg.dataset]
    names = [n for n in names if n]
    if not names:
        raise ValueError('pretraining needs --dataset (a name or a list, e.g. \'["webvid2.5m", "cc3m"]\')')
    return names


SHARD_PREFIXES = ("", "img_")
"""Pretraining shard names: LAVENDER's ``{dataset}_train_{k}.tsv`` / ``{dataset}_val.tsv`` and VIOLET's
``img_{dataset}_train_{k}.tsv`` / ``img_{dataset}_val.tsv``."""


def open_frames(cfg: Config, dataset: str) -> VideoStore:
    """The frame store of a pretraining dataset: its train shards (+ val table), LAVENDER's or VIOLET's
    names, or its single TSV ``img_{dataset}.tsv``."""
    folder = Path(cfg.img_tsv_dir or cfg.data_dir)
    prefix = next((p for p in SHARD_PREFIXES if (folder / f"{p}{dataset}_train_0.tsv").is_file()), None)
    if prefix is None:
        if not (folder / f"img_{dataset}.tsv").is_file():
            last = cfg.size_part - 1
            raise FileNotFoundError(
                f"no frames for pretraining dataset {dataset!r} in {folder}; looked for LAVENDER's shards "
                f"{dataset}_train_0..{last}.tsv, VIOLET's img_{dataset}_train_0..{last}.tsv and one table "
                f"img_{dataset}.tsv"
            )
        return open_store(cfg, dataset)
    stem = f"{prefix}{dataset}_train"
    shards = shard_paths(folder, stem)
    if len(shards) < cfg.size_part:
        raise FileNotFoundError(
            f"{folder}: {len(shards)} shards {stem}_*.tsv, but size_part={cfg.size_part}; "
            f"set --size_part {len(shards)} or add the missing shards"
        )
    if len(shards) > cfg.size_part:
        logger.info("%s: using the first %d of %d shards (size_part)", dataset, cfg.size_part, len(shards))
    val = folder / f"{prefix}{dataset}_val.tsv"
    return VideoStore([*shards[: cfg.size_part], *([val] if val.is_file() else [])])


def stored_records(ann: AnnotationFile, split: str, stored: set[str]) -> RecordList:
    """The split's items whose video is in the frame tables (the others dropped with a warning)."""
    records = ann[split]
    kept = [r for r in records if r.video in stored]
    if len(kept) < len(records):
        missing = next(r.video for r in records if r.video not in stored)
        logger.warning(
            "%s: %d of %d '%s' items have no frames (e.g. video %r); they are left out",
            ann.path, len(records) - len(kept), len(records), split, missing,
        )  # fmt: skip
    return RecordList(PretrainItem, kept)


@dataclass
class PretrainSource:
    """One pretraining dataset: its name, frames and per-split items."""

    name: str
    store: VideoStore
    splits: dict[str, RecordList]

    @classmethod
    def open(cls, cfg: Config, name: str) -> PretrainSource:
        store = open_frames(cfg, name)
        ann = load_annotations(txt_path(cfg, name), "pretrain", on_error=cfg.on_bad_item)
        stored = store.ids()
        splits = {split: stored_records(ann, split, stored) for split in ann.splits}
        if not any(len(records) for records in splits.values()):
            raise ValueError(f"{ann.path}: none of its videos are in the frame tables {store.paths}")
        return cls(name, store, splits)


# ------------------------------------------------------------------------------------------------ task


@register_task("pretrain")
class PretrainTask(Task):
    serves = "retrieval"  # its matching head is retrieval's: a checkpoint with VTM can match and retrieve

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.objectives = list(dict.fromkeys(cfg.pretrain_tasks))
        if not self.objectives or any(o not in OBJECTIVES for o in self.objectives):
            raise ValueError(f"pretrain_tasks={cfg.pretrain_tasks}; choose from {list(OBJECTIVES)}")
        self.n_negatives = cfg.vtm_negatives
        self.global_negatives = cfg.vtm_negatives_global
        self.sources = [PretrainSource.open(cfg, d) for d in dataset_names(cfg)]
        self.true_id, self.false_id = layouts.true_false_ids(tokenizer)

    @classmethod
    def inference_entry(cls, cfg: Config, task: Task | None = None) -> dict[str, Any] | None:
        """Retrieval's entry when the run trains matching (VTM); none for MTM alone."""
        if "vtm" not in cfg.pretrain_tasks:
            return None
        return get_task(cls.serving_name()).inference_entry(cfg, None)

    def frame_table(self) -> Path | None:
        return Path(self.sources[0].store.paths[0]) if self.sources else None

    def eval_splits(self) -> list[str]:
        return ["val"] if any(len(s.splits.get("val", ())) for s in self.sources) else []

    # ---- training

    def train_streams(self) -> list[TrainStream]:
        """One stream per dataset (a batch never mixes datasets, e.g. videos and images)."""
        streams = []
        for source in self.sources:
            records = source.splits.get("train")
            if not records:
                continue
            dataset = clip_dataset(self.cfg, source.store, records, train=True)
            name = self.name if len(self.sources) == 1 else f"{self.name}/{source.name}"
            streams.append(self.make_stream(name, dataset))
        return streams

    def train_stream(self) -> TrainStream | None:
        streams = self.train_streams()
        if len(streams) > 1:
            raise ValueError(f"{len(streams)} pretraining datasets make several streams; use train_streams()")
        return streams[0] if streams else None

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        rng = random.Random(random.getrandbits(64))
        texts = [rng.choice(item["record"].captions) for item in items]
        batch: dict[str, Any] = {
            "video": stack_clips_padded(items),
            "texts": texts,
            "ids": [item["id"] for item in items],
        }
        if "mtm" in self.objectives:
            batch["mtm"] = mlm_layout(self.tok, texts, self.cfg.size_txt, self.cfg.p_mask)
        if "vtm" in self.objectives and not self.global_negatives:
            video, text, matched = layouts.vtm_pairs(len(items), self.n_negatives, rng)
            batch["vtm"] = layouts.vtm(self.tok, [texts[j] for j in text], self.cfg.size_txt, matched)
            batch["pair_video"] = torch.tensor(video)
        return batch

    def step(self, model, batch: dict[str, Any]) -> dict:
        feat, mask = model.encode_video(on_device(batch["video"], model_device(model)))
        out: dict[str, torch.Tensor] = {}
        if "mtm" in self.objectives:
            mtm = masked_token_loss(model, feat, mask, batch["mtm"])
            out["mtm_loss"], out["mtm_acc"] = mtm["loss"], mtm["acc"]
        if "vtm" in self.objectives:
            if self.global_negatives:
                rng = random.Random(random.getrandbits(64))
                video, texts, matched = global_vtm_pairs(batch["texts"], self.n_negatives, rng)
                layout = layouts.vtm(self.tok, texts, self.cfg.size_txt, matched)
                pair_video = torch.tensor(video)
            else:
                layout, pair_video = batch["vtm"], batch["pair_video"]
            vtm = matching_loss(model, feat, mask, layout, pair_video)
            out["vtm_loss"], out["vtm_acc"] = vtm["loss"], vtm["acc"]
        out["loss"] = sum(out[f"{o}_loss"] for o in self.objectives)
        return out

    # ---- evaluation

    def evaluate(self, model, split: str) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for source in self.sources:
            if not len(source.splits.get(split, ())):
                continue
            found = self.evaluate_source(model, source, split)
            prefix = "" if len(self.sources) == 1 else f"{source.name}/"
            metrics.update({prefix + k: v for k, v in found.items()})
        return metrics

    def evaluate_source(self, model, source: PretrainSource, split: str) -> dict[str, float]:
        """Masked-token and matching accuracy on one dataset's split (each item on one rank)."""
        records = source.splits[split]
        texts = [r.captions[0] for r in records]
        candidates = matching_candidates(texts, self.n_negatives, self.cfg.seed)
        dataset = clip_dataset(self.cfg, source.store, records, train=False)
        device = model_device(model)
        local = []
        for batch in eval_batches(dataset, self.cfg.size_batch, lambda b: b, self.cfg.n_workers):
            index = [item["index"] for item in batch]
            feat, mask = model.encode_video(on_device(stack_clips_padded(batch), device))
            tokens = [(0, 0)] * len(batch)
            matches: list[bool | None] = [None] * len(batch)
            if "mtm" in self.objectives:
                tokens = self.masked_token_hits(model, feat, mask, [texts[i] for i in index], index)
            if "vtm" in self.objectives:
                matches = self.matching_hits(model, feat, mask, texts, [candidates[i] for i in index])
            local += [(*t, m) for t, m in zip(tokens, matches)]
        results = D.gather_eval(local)
        metrics: dict[str, float] = {"n_items": float(len(results))}
        if "mtm" in self.objectives:
            n_masked = sum(r[1] for r in results)
            metrics["masked_token_acc"] = sum(r[0] for r in results) / max(1, n_masked)
            metrics["n_masked_tokens"] = float(n_masked)
        if "vtm" in self.objectives:
            judged = [r[2] for r in results if r[2] is not None]
            metrics["matching_acc"] = sum(judged) / max(1, len(judged))
            metrics["n_matching_items"] = float(len(judged))
        return metrics

    def masked_token_hits(
        self, model, feat, mask, texts: list[str], index: list[int]
    ) -> list[tuple[int, int]]:
        """(correct, masked) token counts per text, with a masking fixed by (seed, item index)."""
        generators = [torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + i) for i in index]
        layout = mlm_layout(self.tok, texts, self.cfg.size_txt, self.cfg.p_mask, generators)
        logits, labels, row = masked_token_logits(model, feat, mask, layout)
        hits = (logits.argmax(-1) == labels).double()
        correct = torch.bincount(row, weights=hits, minlength=len(texts))
        masked = torch.bincount(row, minlength=len(texts))
        return [(int(c), int(m)) for c, m in zip(correct.tolist(), masked.tolist())]

    def matching_hits(
        self, model, feat, mask, texts: list[str], candidates: list[list[int]]
    ) -> list[bool | None]:
        """Per video: whether its own text (``candidates[n][0]``) scores strictly above each of its
        negatives (None when it has none)."""
        counts = [len(c) for c in candidates]
        layout = layouts.vtm(self.tok, [texts[j] for c in candidates for j in c], self.cfg.size_txt)
        pair_video = torch.repeat_interleave(torch.arange(len(candidates)), torch.tensor(counts))
        score = layouts.true_false_ranker(self.cfg.tf_score)
        logits = logits_at(model, feat, mask, layout, layout.mask_pos, pair_video.to(feat.device))
        scores = score(logits.float(), self.true_id, self.false_id).cpu()
        out = []
        for group in torch.split(scores, counts):
            out.append(bool((group[0] > group[1:]).all()) if len(group) > 1 else None)
        return out
