"""Many frames of long videos into the frame store, with bounded memory: rows for long-form samples.

:func:`read_long_video` takes ``n`` frames spread evenly over a whole video (the extractor's rule,
``int(N * (i + 1))``, ``N = n_decoded / (n + 1)``) with :func:`lib.data.video.read_frames`: a packet scan,
then decoding only from the keyframe before each pick (seeks, never the whole video), and each picked frame
JPEG-encoded (and downscaled to ``size_short``) the moment it is decoded. Memory holds ``n`` JPEGs and the
decoder's state, whatever the video's length and resolution (``bench/long_video.py``: peak RSS on a
10-minute video).

Rows go into the same TSV store as every clip, in the reference's downstream layout, which every reader
already takes (:func:`lib.data.tsv.frame_columns`)::

    id \\t {"times": [s, ...], "duration": s, "fps": f, "n_frames": N} \\t b64 JPEG x n

``times`` are the frames' presentation times in seconds, so :mod:`lib.data.multi_clip` can take the frames
of any time span (a sentence's timestamps) as well as frames spread over the whole video. One row holds all
of a video's frames (``bench/long_video.py`` compares it with one row per clip keyed ``id#k``: the loader
reads one row instead of M and the spans are not fixed at extraction).

:func:`extract_long_videos` writes such rows for many videos (``_tools/extract_long_video.py``): a video
that cannot be read is recorded in ``PREFIX.failed.jsonl`` and the run goes on; re-running the same prefix
skips the ids already written; a kill never leaves a torn row (:class:`lib.data.tsv.TSVWriter`).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lib.data.extract import list_videos, video_id
from lib.data.tsv import TSVWriter, split_tsv_path
from lib.data.video import JPEG_QUALITY, VideoDecodeError, encode_jpeg, read_frames
from lib.utils.atomic import write_bytes, write_json

META_KEYS = ("times", "duration", "fps", "n_frames")


@dataclass
class LongVideoRow:
    """``n`` base64 JPEG frames of one video and when each is shown."""

    frames: list[bytes]
    times: list[float]
    duration: float
    fps: float
    n_frames: int

    def columns(self, vid: str) -> list[bytes]:
        """The TSV row: id, meta JSON, frames."""
        meta = {"times": self.times, "duration": self.duration, "fps": self.fps, "n_frames": self.n_frames}
        return [vid.encode(), json.dumps(meta, separators=(",", ":")).encode(), *self.frames]


def read_long_video(
    path: str | os.PathLike, n: int, size_short: int | None = None, quality: int = JPEG_QUALITY
) -> LongVideoRow:
    """``n`` frames spread over the whole video at ``path``, JPEG-encoded as they are decoded.

    A frame without a timestamp gets the time its index implies at the stream's rate. ``duration`` is the
    last decoded frame's end (``n_frames / fps``). Raises :class:`lib.data.video.VideoDecodeError`."""
    encode = functools.partial(encode_jpeg, quality=quality, size_short=size_short)
    video = read_frames(path, n, convert=encode)
    fps = video.fps or 1.0
    times = [t if t is not None else i / fps for t, i in zip(video.times, video.indices)]
    return LongVideoRow(video.frames, times, video.n_frames / fps, video.fps, video.n_frames)


def parse_meta(column: bytes | str) -> dict[str, Any]:
    """The meta column of a long-video row (ValueError if it is not one)."""
    try:
        meta = json.loads(column)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"not a long-video meta column ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("times"), list):
        raise ValueError(f"a long-video meta column is a JSON object with {list(META_KEYS)}")
    return meta


def _extract_one(path: str, n: int, size_short: int | None, quality: int) -> tuple[str, str, Any]:
    vid = video_id(Path(path))
    try:
        return vid, "ok", read_long_video(path, n, size_short, quality)
    except VideoDecodeError as e:
        return vid, "failed", e.reason
    except Exception as e:  # noqa: BLE001 - one file's decoder surprise must not stop the run
        return vid, "failed", f"unexpected {type(e).__name__}: {e}"


def extract_long_videos(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    n: int,
    output_prefix: str | os.PathLike,
    size_short: int | None = None,
    quality: int = JPEG_QUALITY,
    progress: bool = True,
) -> dict[str, Any]:
    """Write one long-video row per video of ``paths`` (a folder, a list file or paths:
    :func:`lib.data.extract.list_videos`) into ``PREFIX.tsv``; return (and write to ``PREFIX.json``) a
    summary. Videos are read one at a time, in this process (a long video is its own unit of work)."""
    if n < 1:
        raise ValueError(f"n (frames per video) must be >= 1, got {n}")
    tsv, _ = split_tsv_path(output_prefix)
    stem = str(tsv)[: -len(".tsv")]
    layout = "id \\t meta JSON (times, duration, fps, n_frames) \\t base64 JPEG x n"
    settings = {"tool": "lib.data.long_video", "n": n, "size_short": size_short, "jpeg_quality": quality}
    settings["layout"] = layout
    summary_path = Path(f"{stem}.json")
    resuming = tsv.exists() or Path(f"{tsv}.inprogress").exists()
    if resuming:
        previous = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        if any(previous.get(k) != v for k, v in settings.items()):
            raise ValueError(f"{tsv} was made with other settings (see {summary_path}); use another prefix")
    write_json(summary_path, {**settings, "status": "running"}, indent=1)
    failures: list[dict[str, str]] = []
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    with TSVWriter(tsv, resume=resuming) as writer:
        done, first_path = writer.keys_written(), {}
        videos = [str(p) for p in list_videos(paths)]
        for path in tqdm(videos, disable=not progress, unit="video", desc=f"extract {tsv.name}"):
            vid = video_id(Path(path))
            if vid in first_path:
                failures.append({"path": path, "id": vid, "reason": f"duplicate id (also {first_path[vid]})"})
                continue
            first_path[vid] = path
            if vid in done:
                counts["skipped"] += 1
                continue
            vid, status, result = _extract_one(path, n, size_short, quality)
            if status == "ok":
                writer.write(result.columns(vid))
                writer.flush()
                counts["ok"] += 1
            else:
                failures.append({"path": path, "id": vid, "reason": result})
    counts["failed"] = len(failures)
    write_bytes(Path(f"{stem}.failed.jsonl"), b"".join(json.dumps(f).encode() + b"\n" for f in failures))
    summary = {**settings, "status": "complete", "counts": counts, "failures": failures}
    write_json(summary_path, summary, indent=1)
    return summary
