"""Datasets: a frame store keyed by video id, and one map-style dataset that pairs clips with records.

Every task family reads the same way: an annotation record (see :mod:`lib.data.annotations`) names a video;
the video's stored frames come from a TSV row (``{data_dir}/img_{dataset}.tsv``); the clip tensor is built
by :func:`lib.data.frames.load_clip`. Datasets return raw text (captions, questions, options); turning text
into token ids is the task's collate function (``lib.tasks``), because that is where the model's layouts live.

A stored video that cannot make a clip is a :class:`BadClipError` naming the TSV file, the row and the
frame: a row with fewer frames than the table's rows have (a TSV cut between frames; the count comes from
the extractor's summary beside the table, else from rows sampled across it), a frame that is not valid
base64 or not a complete, intact JPEG (libjpeg's "Corrupt JPEG data" warnings included). A training
:class:`ClipDataset` with ``on_bad_item="skip"`` skips such an item instead (the next item takes its place),
logs it and counts it in :attr:`ClipDataset.n_skipped`, shared by its DataLoader workers.

Audio (a third modality, :mod:`lib.data.audio`): a :class:`ClipDataset` given an :class:`AudioSource` adds
each item's filterbank slices, read from the audio store BY VIDEO ID (never by row order), and whether the
video has audio at all; ``frames=False`` leaves the frames out (a task whose modality group is text-audio).
:func:`stack_clips` then returns :class:`Clips`, a dict of the modalities' batches and their masks
(``{"video": (B, T, 3, H, W), "audio": (B, S, n_mels, frames), "masks": {"audio": (B, S)}}``), which
``LavenderModel.encode_video`` takes as it takes a frame tensor. Without audio nothing changes.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from lib.data.audio import AudioFormatError, AudioStore, FbankConfig, audio_slices, stack_audio
from lib.data.frames import ClipTransform, load_clip, resize_clip
from lib.data.tsv import MultiTSV, TSVFile, frame_columns, load_id2lineidx

logger = logging.getLogger(__name__)

N_SAMPLED_ROWS = 9  # rows read to learn a table's frame count when no extractor summary says it
MAX_SKIPPED_IN_A_ROW = 32  # on_bad_item skip: bad items tried in a row before giving up


class BadClipError(ValueError):
    """A stored video cannot make a clip; the message names the TSV file, the row and the frame."""


def expected_frame_count(tsv: TSVFile, frame_col: int | None = None) -> int | None:
    """Frames per row of a table: ``k`` of the extractor's summary ``X.json`` beside ``X.tsv``, else the
    most common count among rows sampled evenly across the file (None for an empty table)."""
    summary = tsv.path.with_suffix(".json")
    if summary.is_file():
        try:
            made = json.loads(summary.read_text())
            if isinstance(made, dict) and made.get("tool") == "lib.data.extract":
                return int(made["k"])
        except (ValueError, KeyError, TypeError):
            pass  # not the extractor's summary: sample rows instead
    n = len(tsv)
    if n == 0:
        return None
    counts = Counter(
        len(frame_columns(tsv.row(int(i)), frame_col))
        for i in np.unique(np.linspace(0, n - 1, min(n, N_SAMPLED_ROWS)).astype(np.int64))
    )
    return max(counts, key=lambda k: (counts[k], k))


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
        self._expected: dict[Path, int | None] = {}

    def __len__(self) -> int:
        return len(self.tsv)

    def ids(self) -> set[str]:
        """Every video id in the store."""
        return set(self._offsets) if self._offsets is not None else set(self.tsv.keys())

    def locate(self, video_id: str) -> tuple[TSVFile, int]:
        """The TSV file holding ``video_id`` and its row there (KeyError naming the store if absent)."""
        if self._offsets is not None:
            if video_id not in self._offsets:
                raise KeyError(f"video {video_id!r} not in the id2lineidx map of {self.paths[0]}")
            return self.tsv, self.tsv.index_of_offset(self._offsets[video_id])  # type: ignore[union-attr]
        if isinstance(self.tsv, MultiTSV):
            k, row = self.tsv.locate(self.tsv.index_of(video_id))
            return self.tsv.files[k], row
        return self.tsv, self.tsv.index_of(video_id)

    def expected_frames(self, tsv: TSVFile) -> int | None:
        """Frames per row of one of the store's tables (:func:`expected_frame_count`, once per process)."""
        if tsv.path not in self._expected:
            self._expected[tsv.path] = expected_frame_count(tsv, self.frame_col)
        return self._expected[tsv.path]

    def row(self, video_id: str) -> list[bytes]:
        """Every column of ``video_id``'s row (KeyError naming the store if absent)."""
        tsv, row = self.locate(video_id)
        return tsv.row(row)

    def frames(self, video_id: str) -> list[bytes]:
        """The stored base64 JPEG frames of ``video_id`` (KeyError naming the store if absent;
        :class:`BadClipError` for a row with no frames or fewer than the table's rows have)."""
        tsv, row = self.locate(video_id)
        frames = frame_columns(tsv.row(row), self.frame_col)
        expected = self.expected_frames(tsv)
        if not frames or (expected is not None and len(frames) < expected):
            raise BadClipError(
                f"{tsv.path} row {row} (video {video_id!r}): {len(frames)} frames where the table's rows "
                f"have {expected} (a row cut between frames?); re-extract the video, or find every such row "
                f"with `python _tools/check_tsv.py {tsv.path}`"
            )
        return frames

    def clip(
        self, video_id: str, size_frame: int, transform: ClipTransform, rng: random.Random | None = None
    ) -> torch.Tensor:
        """(T, 3, H, W) clip of ``video_id``, frames sampled as the reference (train: random start);
        :class:`BadClipError` naming file, row and frame when the stored frames cannot make one."""
        frames = self.frames(video_id)
        try:
            return load_clip(frames, size_frame, transform, transform.train, rng)
        except ValueError as e:
            tsv, row = self.locate(video_id)
            raise BadClipError(f"{tsv.path} row {row} (video {video_id!r}): {e}") from None


@dataclass(frozen=True)
class AudioSource:
    """Where a dataset's audio comes from: the audio store (rows by video id) and the features' settings."""

    store: AudioStore
    config: FbankConfig = FbankConfig()


class Clips(dict):
    """A batch of several context modalities: each modality's input under its name, their validity masks
    under ``"masks"``; ``.to(device)`` moves every tensor (a plain dict from the engine works the same)."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Clips:
        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=non_blocking)
            return {k: move(v) for k, v in x.items()} if isinstance(x, dict) else x

        return Clips({k: move(v) for k, v in self.items()})

    @property
    def batch_size(self) -> int:
        return len(next(v for k, v in self.items() if k != "masks"))


class ClipDataset(Dataset):
    """Records (annotation items with a ``.video`` field) paired with their clips.

    Item ``i`` is ``{"index": i, "id": video_id, "video": (T,3,H,W) tensor, "record": records[i]}``.
    ``videos_only=True`` makes one item per distinct video instead (for encoding each video once).
    ``items_per_video=k > 1`` groups the records of each video (in file order) into slots of at most ``k``:
    item ``i`` is a slot, with ``"records"`` (its records) instead of ``"record"``; every record is in exactly
    one slot, so an epoch over the slots still covers every record once while each clip is decoded (and
    encoded by the model) once per slot.

    ``audio``: the items also carry ``"audio"`` (n_slices, n_mels, frames) and ``"has_audio"`` (zeros and
    False for a video stored without audio; a video missing from the audio store, or a damaged audio row,
    is a :class:`BadClipError` naming the store). ``frames=False``: no frames are read (no ``"video"``).

    ``on_bad_item="skip"`` (training): an item whose stored video cannot make a clip (:class:`BadClipError`)
    is logged, counted in :attr:`n_skipped` (one counter shared by the DataLoader workers) and replaced by the
    next good item; ``"raise"`` (the default, and always at evaluation) lets the error through.
    """

    def __init__(
        self,
        store: VideoStore,
        records: Sequence[Any],
        size_frame: int,
        transform: ClipTransform,
        videos_only: bool = False,
        items_per_video: int = 1,
        on_bad_item: str = "raise",
        audio: AudioSource | None = None,
        frames: bool = True,
    ):
        if not frames and audio is None:
            raise ValueError("a ClipDataset without frames needs an audio source")
        self.audio = audio
        self.with_frames = frames
        if items_per_video < 1:
            raise ValueError(f"items_per_video must be >= 1, got {items_per_video}")
        if on_bad_item not in ("raise", "skip"):
            raise ValueError(f"on_bad_item must be 'raise' or 'skip', got {on_bad_item!r}")
        self.on_bad_item = on_bad_item
        self._skipped = multiprocessing.Value("q", 0) if on_bad_item == "skip" else None
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

    @property
    def n_skipped(self) -> int:
        """Bad items skipped so far, by this process and its DataLoader workers (``on_bad_item="skip"``)."""
        return int(self._skipped.value) if self._skipped is not None else 0

    def __getitem__(self, i: int) -> dict[str, Any]:
        if self._skipped is None:
            return self._item(i)
        for attempt in range(min(MAX_SKIPPED_IN_A_ROW, len(self))):
            try:
                return self._item((i + attempt) % len(self))
            except BadClipError as e:
                with self._skipped.get_lock():
                    self._skipped.value += 1
                logger.warning("on_bad_item skip: skipped a training item: %s", e)
        raise BadClipError(
            f"{MAX_SKIPPED_IN_A_ROW} bad items in a row from item {i} of {self.store.paths}; check the frame "
            "tables with _tools/check_tsv.py --decode"
        )

    def _item(self, i: int) -> dict[str, Any]:
        if self.slots is not None:
            video_id, rows = self.slots[i]
            records = [self.records[r] for r in rows]
            return {"index": i, "id": video_id, **self._context(video_id), "records": records}
        if self.videos is not None:
            video_id, record = self.videos[i], None
        else:
            record = self.records[i]
            video_id = record.video
        return {"index": i, "id": video_id, **self._context(video_id), "record": record}

    def _context(self, video_id: str) -> dict[str, Any]:
        """The clip of ``video_id`` (and its audio, with an audio source)."""
        out: dict[str, Any] = {}
        if self.with_frames:
            out["video"] = self.store.clip(video_id, self.size_frame, self.transform)
            out.update(self._resize_to)
        if self.audio is not None:
            try:
                out["audio"], out["has_audio"] = audio_slices(
                    self.audio.store, video_id, self.audio.config, train=self.transform.train
                )
            except KeyError as e:
                raise BadClipError(str(e.args[0])) from None
            except AudioFormatError as e:
                raise BadClipError(f"audio of video {video_id!r}: {e}") from None
        return out

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


def answered_rows_batch(items: Sequence[dict[str, Any]], layout: Callable[[list, list[int]], Any]) -> dict:
    """A training batch of answered questions, one row each (:func:`item_rows`): the clips, ``layout(records,
    answers)``, the answers, each row's item (``row_video``) and the items' ids."""
    records, row_video = item_rows(items)
    answers = [r.answer for r in records]
    return {
        "video": stack_clips(items),
        "layout": layout(records, answers),
        "answer": torch.tensor(answers),
        "row_video": row_video,
        "ids": [item["id"] for item in items],
    }


def stack_clips(items: Sequence[dict[str, Any]]) -> torch.Tensor | Clips:
    """(B, T, 3, H, W) from items of :class:`ClipDataset` (clips of one batch must share T and size); items
    with audio make :class:`Clips` (the frames under "video" when the items have them).

    Clips left at their stored resolution (items with ``resize_to``, from ``defer_resize``) are stacked as
    they are when they share a size (the model resizes the batch on its device); when their sizes differ,
    each is resized to ``resize_to`` here."""
    if "audio" not in items[0]:
        return _stack_frames(items)
    batch = Clips()
    if "video" in items[0]:
        batch["video"] = _stack_frames(items)
    batch["audio"], valid = stack_audio([(item["audio"], item["has_audio"]) for item in items])
    batch["masks"] = {"audio": valid}
    return batch


def _stack_frames(items: Sequence[dict[str, Any]]) -> torch.Tensor:
    clips = [item["video"] for item in items]
    shapes = {tuple(c.shape) for c in clips}
    if len(shapes) != 1 and all("resize_to" in item for item in items):
        clips = [resize_clip(c, item["resize_to"]) for c, item in zip(clips, items)]
        shapes = {tuple(c.shape) for c in clips}
    if len(shapes) != 1:
        ids = [item["id"] for item in items]
        raise ValueError(f"clips of one batch differ in shape {sorted(shapes)} (videos {ids})")
    return torch.stack(clips)


def stack_clips_padded(items: list[dict[str, Any]]) -> torch.Tensor | Clips:
    """(B, T, 3, H, W) like :func:`stack_clips`; one-frame clips are repeated to the batch's frame count."""
    if "video" not in items[0]:
        return stack_clips(items)
    frames = max(item["video"].shape[0] for item in items)

    def padded(item: dict[str, Any]) -> dict[str, Any]:
        clip = item["video"]
        return {**item, "video": clip.expand(frames, -1, -1, -1)} if clip.shape[0] == 1 else item

    return stack_clips([padded(item) for item in items])
