"""Long-form samples from the frame store: M consecutive clips of T frames, with a clip index per frame.

LF-VILA reads 4 clips x 8 frames = 32 frames per sample. Two ways to lay the clips over a video:

* ``spans="whole"`` (paragraph retrieval, LF-VILA's downstream tasks): M x T frames spread over the whole
  video by LAVENDER's rule (:func:`lib.data.frames.sample_frame_indices`: evenly spaced, a random start in
  training), cut into M consecutive clips of T (:func:`whole_video_indices`). Any row works, plain
  extractor rows included.
* ``spans="timestamps"`` (a time span per sentence, ActivityNet Captions): T frames within each span
  (:func:`span_indices`). It needs the stored frames' times: a long-video row carries them
  (:mod:`lib.data.long_video`); for a plain row they follow from the extractor's rule and the video's
  ``duration`` (from the annotation): frame i of K is shown at about ``(i + 1) / (K + 1) * duration``.

A paragraph has at most M segments: LF-VILA merges adjacent sentences, the pair with the shortest joined
text first, until M remain (:func:`merge_segments`; their spans merge into their union). Segment k goes
with clip k, which is what the temporal contrastive loss (:func:`lib.model.long_form.mtc_loss`) pairs: with
timestamps they share the span; with whole-video spans the k-th of M segments goes with the k-th M-th of
the video, right when the M sentences describe M equal parts (LF-VILA's pretraining runs of M clips).
A paragraph of fewer segments than M gives, with timestamps, padded clips: their frames repeat the last
clip's and have clip index -1 (:func:`frame_mask` false), so every sample has M x T frames and batches stack.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from lib.data.datasets import VideoStore, stack_clips
from lib.data.frames import ClipTransform, clip_at, sample_frame_indices
from lib.data.long_video import parse_meta
from lib.data.tsv import frame_columns

Span = tuple[float, float]
SPAN_MODES = ("whole", "timestamps")


def merge_segments(
    sentences: Sequence[str], max_segments: int, timestamps: Sequence[Sequence[float]] | None = None
) -> tuple[list[str], list[Span] | None]:
    """At most ``max_segments`` segments: while there are more, the two adjacent ones whose joined text is
    shortest become one (their text joined by a space, their spans by union). LF-VILA's rule."""
    texts = [s.strip() for s in sentences]
    spans = None if timestamps is None else [(float(a), float(b)) for a, b in timestamps]
    if spans is not None and len(spans) != len(texts):
        raise ValueError(f"{len(texts)} sentences but {len(spans)} timestamps")
    while len(texts) > max_segments:
        joined = [len(texts[i]) + len(texts[i + 1]) for i in range(len(texts) - 1)]
        i = joined.index(min(joined))
        texts[i : i + 2] = [f"{texts[i]} {texts[i + 1]}"]
        if spans is not None:
            spans[i : i + 2] = [(min(spans[i][0], spans[i + 1][0]), max(spans[i][1], spans[i + 1][1]))]
    return texts, spans


def whole_video_indices(
    n_stored: int, n_clips: int, frames_per_clip: int, train: bool, rng: random.Random | None = None
) -> tuple[list[int], list[int]]:
    """Stored-frame indices of M x T frames spread over the whole video, and each frame's clip."""
    indices = sample_frame_indices(n_stored, n_clips * frames_per_clip, train, rng)
    if len(indices) == 1:  # an image: one frame for every slot
        indices = indices * (n_clips * frames_per_clip)
    return indices, [k for k in range(n_clips) for _ in range(frames_per_clip)]


def span_indices(
    times: Sequence[float],
    spans: Sequence[Span],
    frames_per_clip: int,
    train: bool,
    rng: random.Random | None = None,
) -> list[int]:
    """For stored frames shown at ``times`` (ascending), ``frames_per_clip`` stored-frame indices within each
    span, span after span: sampled among the frames inside it by LAVENDER's rule (repeated when fewer),
    or the frame nearest to its middle when none falls inside. A span is half-open, ``[start, end)``: a
    frame shown at exactly ``end`` belongs to what comes next (the next sentence, when spans abut)."""
    if not times:
        raise ValueError("a clip needs at least one stored frame (the row has none)")
    indices: list[int] = []
    for start, end in spans:
        first, last = bisect.bisect_left(times, start), bisect.bisect_left(times, end)
        if last > first:
            picks = sample_frame_indices(last - first, frames_per_clip, train, rng)
            indices += [first + i for i in (picks * frames_per_clip)[:frames_per_clip]]
        else:
            middle = (start + end) / 2
            nearest = min(range(len(times)), key=lambda i: abs(times[i] - middle))
            indices += [nearest] * frames_per_clip
    return indices


def stored_times(n_stored: int, duration: float) -> list[float]:
    """When the extractor's K = ``n_stored`` frames of a ``duration``-second video are shown (about)."""
    return [(i + 1) / (n_stored + 1) * duration for i in range(n_stored)]


class LongVideoSource:
    """A video's stored frames and, when known, their times (a long-video row's meta)."""

    def __init__(self, row: Sequence[bytes]):
        self.frames = frame_columns(row)
        self.times: list[float] | None = None
        self.duration: float | None = None
        if len(row) > 1 and len(row) - len(self.frames) == 2:  # id \t meta \t frames
            try:
                meta = parse_meta(row[1])
            except ValueError:
                return  # a downstream row with other meta: no times
            self.times = [float(t) for t in meta["times"]]
            self.duration = meta.get("duration")
            if len(self.times) != len(self.frames):
                raise ValueError(f"the row has {len(self.frames)} frames but {len(self.times)} times")

    def frame_times(self, duration: float | None) -> list[float]:
        """Stored frames' times: the row's own, else the extractor's rule over ``duration``."""
        if self.times is not None:
            return self.times
        if duration is None:
            raise ValueError("frames within timestamps need the frames' times: a long-video row "
                             "(lib.data.long_video) or the video's duration in the annotation")  # fmt: skip
        return stored_times(len(self.frames), duration)


class MultiClipDataset(Dataset):
    """Records naming a video (``.video``, ``.sentences``; for ``spans="timestamps"`` also ``.timestamps``
    and maybe ``.duration``: :class:`lib.data.annotations.ParagraphItem`), each with M clips of T frames.

    Item ``i``: ``{"index", "id", "record", "video": (M*T, 3, H, W), "clip_index": (M*T,) long (-1: a padded
    frame), "segments": the paragraph merged to at most M sentences}``."""

    def __init__(
        self,
        store: VideoStore,
        records: Sequence[Any],
        n_clips: int,
        frames_per_clip: int,
        transform: ClipTransform,
        spans: str = "whole",
    ):
        if spans not in SPAN_MODES:
            raise ValueError(f"spans must be one of {SPAN_MODES}, got {spans!r}")
        if n_clips < 1 or frames_per_clip < 1:
            raise ValueError(f"n_clips and frames_per_clip must be >= 1, got {n_clips}, {frames_per_clip}")
        self.store, self.records, self.transform, self.spans = store, records, transform, spans
        self.n_clips, self.frames_per_clip = n_clips, frames_per_clip

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict[str, Any]:
        record = self.records[i]
        try:
            item = self._item(record)
        except ValueError as e:
            raise ValueError(f"video {record.video!r} in {self.store.paths}: {e}") from None
        return {"index": i, "id": record.video, "record": record, **item}

    def _item(self, record: Any) -> dict[str, Any]:
        source = LongVideoSource(self.store.row(record.video))
        m, t, train = self.n_clips, self.frames_per_clip, self.transform.train
        timestamps = getattr(record, "timestamps", None) if self.spans == "timestamps" else None
        if self.spans == "timestamps" and not timestamps:
            raise ValueError("spans='timestamps' needs a record with timestamps")
        segments, spans = merge_segments(record.sentences, m, timestamps)
        if spans is None:
            indices, clip_index = whole_video_indices(len(source.frames), m, t, train)
        else:
            times = source.frame_times(getattr(record, "duration", None) or source.duration)
            indices = span_indices(times, spans, t, train)
            clip_index = [k for k in range(len(spans)) for _ in range(t)]
            padding = (m - len(spans)) * t
            indices, clip_index = indices + indices[-t:] * (m - len(spans)), clip_index + [-1] * padding
        video = clip_at(source.frames, indices, self.transform)
        clip_index = torch.tensor(clip_index, dtype=torch.long)
        return {"video": video, "clip_index": clip_index, "segments": segments}


def stack_multi_clips(items: Sequence[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, M*T, 3, H, W) frames and (B, M*T) clip indices of :class:`MultiClipDataset` items."""
    return stack_clips(items), torch.stack([item["clip_index"] for item in items])


def frame_mask(clip_index: torch.Tensor) -> torch.Tensor:
    """Which frames are real (not padding of a paragraph with fewer segments than clips)."""
    return clip_index >= 0
