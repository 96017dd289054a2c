"""Datasets: a frame store keyed by video id, and one map-style dataset that pairs clips with records.

Every task family reads the same way: an annotation record (see :mod:`lib.data.annotations`) names a video;
the video's stored frames come from a TSV row (``{data_dir}/img_{dataset}.tsv``); the clip tensor is built
by :func:`lib.data.frames.load_clip`. Datasets return raw text (captions, questions, options); turning text
into token ids is the task's collate function (``lib.tasks``), because that is where the model's layouts live.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from lib.data.frames import ClipTransform, load_clip, resize_clip
from lib.data.tsv import MultiTSV, TSVFile, frame_columns, load_id2lineidx


class VideoStore:
    """Stored frames of many videos (one TSV, or several shards) → clips by video id.

    ``frame_col``: index of the first frame column; ``None`` detects it per row (``id \\t frame…`` and
    ``id \\t meta \\t frame…`` both work). ``id2lineidx``: LAVENDER's ``img_*.id2lineidx.pkl``; without
    it the ids are read from column 0 of every row on first use.
    Pickles without open file handles, so one store serves every DataLoader worker.
    """

    def __init__(
        self,
        tsv: str | os.PathLike | Sequence[str | os.PathLike],
        frame_col: int | None = None,
        id2lineidx: str | os.PathLike | None = None,
    ):
        paths = [tsv] if isinstance(tsv, str | os.PathLike) else list(tsv)
        if not paths:
            raise ValueError("VideoStore needs at least one TSV path")
        self.paths = [Path(p) for p in paths]
        self.tsv: TSVFile | MultiTSV = TSVFile(paths[0]) if len(paths) == 1 else MultiTSV(paths)
        self.frame_col = frame_col
        self._offsets = load_id2lineidx(id2lineidx) if id2lineidx is not None else None
        if self._offsets is not None and not isinstance(self.tsv, TSVFile):
            raise ValueError("an id2lineidx map belongs to a single TSV, not to several shards")

    def __len__(self) -> int:
        return len(self.tsv)

    def ids(self) -> set[str]:
        """Every video id in the store."""
        return set(self._offsets) if self._offsets is not None else set(self.tsv.keys())

    def row(self, video_id: str) -> list[bytes]:
        """Every column of ``video_id``'s row (KeyError naming the store if absent)."""
        if self._offsets is not None:
            if video_id not in self._offsets:
                raise KeyError(f"video {video_id!r} not in the id2lineidx map of {self.paths[0]}")
            return self.tsv.row_at_offset(self._offsets[video_id])  # type: ignore[union-attr]
        return self.tsv.row(self.tsv.index_of(video_id))

    def frames(self, video_id: str) -> list[bytes]:
        """The stored base64 JPEG frames of ``video_id`` (KeyError naming the store if absent)."""
        frames = frame_columns(self.row(video_id), self.frame_col)
        if not frames:
            raise ValueError(f"video {video_id!r} in {self.paths}: the row has no frame columns")
        return frames

    def clip(
        self, video_id: str, size_frame: int, transform: ClipTransform, rng: random.Random | None = None
    ) -> torch.Tensor:
        """(T, 3, H, W) clip of ``video_id``, frames sampled as the reference (train: random start)."""
        try:
            return load_clip(self.frames(video_id), size_frame, transform, transform.train, rng)
        except ValueError as e:
            raise ValueError(f"video {video_id!r} in {self.paths}: {e}") from None


class ClipDataset(Dataset):
    """Records (annotation items with a ``.video`` field) paired with their clips.

    Item ``i`` is ``{"index": i, "id": video_id, "video": (T,3,H,W) tensor, "record": records[i]}``.
    ``videos_only=True`` makes one item per distinct video instead (for encoding each video once).
    ``items_per_video=k > 1`` groups the records of each video (in file order) into slots of at most ``k``:
    item ``i`` is a slot, with ``"records"`` (its records) instead of ``"record"``; every record is in exactly
    one slot, so an epoch over the slots still covers every record once while each clip is decoded (and
    encoded by the model) once per slot.
    """

    def __init__(
        self,
        store: VideoStore,
        records: Sequence[Any],
        size_frame: int,
        transform: ClipTransform,
        videos_only: bool = False,
        items_per_video: int = 1,
    ):
        if items_per_video < 1:
            raise ValueError(f"items_per_video must be >= 1, got {items_per_video}")
        self.store = store
        self.records = records
        self.size_frame = size_frame
        self.transform = transform
        self.videos: list[str] | None = None
        self.slots: list[tuple[str, list[int]]] | None = None
        if videos_only:
            self.videos = list(dict.fromkeys(r.video for r in records))
        elif items_per_video > 1:
            by_video: dict[str, list[int]] = {}
            for i, record in enumerate(records):
                by_video.setdefault(record.video, []).append(i)
            self.slots = [
                (video, rows[start : start + items_per_video])
                for video, rows in by_video.items()
                for start in range(0, len(rows), items_per_video)
            ]

    def __len__(self) -> int:
        if self.videos is not None:
            return len(self.videos)
        return len(self.slots) if self.slots is not None else len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self.slots is not None:
            video_id, rows = self.slots[i]
            clip = self.store.clip(video_id, self.size_frame, self.transform)
            records = [self.records[r] for r in rows]
            return {"index": i, "id": video_id, "video": clip, "records": records, **self._resize_to}
        if self.videos is not None:
            video_id, record = self.videos[i], None
        else:
            record = self.records[i]
            video_id = record.video
        clip = self.store.clip(video_id, self.size_frame, self.transform)
        return {"index": i, "id": video_id, "video": clip, "record": record, **self._resize_to}

    @property
    def _resize_to(self) -> dict[str, int]:
        """``{"resize_to": size_img}`` when clips come at the stored resolution (``defer_resize``)."""
        return {"resize_to": self.transform.size_img} if self.transform.defer_resize else {}


def item_rows(items: Sequence[dict[str, Any]]) -> tuple[list[Any], torch.Tensor]:
    """The records of a batch of :class:`ClipDataset` items, one row each, and the item (clip) of each row."""
    records: list[Any] = []
    row_video: list[int] = []
    for i, item in enumerate(items):
        group = item["records"] if "records" in item else [item["record"]]
        records += group
        row_video += [i] * len(group)
    return records, torch.tensor(row_video, dtype=torch.long)


def stack_clips(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    """(B, T, 3, H, W) from items of :class:`ClipDataset` (clips of one batch must share T and size).

    Clips left at their stored resolution (items with ``resize_to``, from ``defer_resize``) are stacked as
    they are when they share a size (the model resizes the batch on its device); when their sizes differ,
    each is resized to ``resize_to`` here."""
    clips = [item["video"] for item in items]
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) != 1 and all("resize_to" in item for item in items):
        clips = [resize_clip(c, item["resize_to"]) for c, item in zip(clips, items)]
        shapes = {tuple(c.shape) for c in clips}
    if len(shapes) != 1:
        ids = [item["id"] for item in items]
        raise ValueError(f"clips of one batch differ in shape {sorted(shapes)} (videos {ids})")
    return torch.stack(clips)


def stack_clips_padded(items: list[dict[str, Any]]) -> torch.Tensor:
    """(B, T, 3, H, W) like :func:`stack_clips`; one-frame clips are repeated to the batch's frame count."""
    frames = max(item["video"].shape[0] for item in items)

    def padded(item: dict[str, Any]) -> dict[str, Any]:
        clip = item["video"]
        return {**item, "video": clip.expand(frames, -1, -1, -1)} if clip.shape[0] == 1 else item

    return stack_clips([padded(item) for item in items])
