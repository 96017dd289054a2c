"""Decode a raw video and pick the frames the reference extractor picks, without decoding it all.

The reference (LAVENDER/VIOLET ``_tools/extract_video-frame.py``) decodes every frame, converts every frame to
RGB, keeps them all in a list and then takes ``K`` of them by :func:`reference_frame_indices` over the decoded
frame count. :func:`read_frames` returns the same frames while keeping only those ``K`` in memory, converting
only those to RGB and decoding only what they depend on.

**The decoded frame count** ``n_frames`` must be known before any frame is picked:

* ``strategy="sequential"`` on an ISO-BMFF file (mp4/mov/m4v/3gp) trusts the header's sample count
  (``stream.frames``); the same pass demuxes the packets after the last pick without decoding them, and when
  their number disagrees with the header the picks are redone from the packet count (flag
  ``header_count_mismatch``); fewer packets than the header lists means a truncated file (an error).
* Otherwise a *scan* demuxes the video stream without decoding it and counts its packets: every non-empty
  packet not flagged "discard" (edit-list pre-roll) yields one decoded frame. The scan also gives every
  packet's presentation timestamp (pts) and keyframe flag, which the seek plan needs. It costs ~1.6 ms of
  CPU per MSR-VTT clip (320x240, 10-25 s; ~4 % of reading its 5 frames), ~3 ms per 20 s 720p clip (0.5 %)
  and ~46 ms for a 10-minute 720p video (18 % of reading 5 frames of it).
* That count holds only for a stream that starts on a keyframe with nothing shown before it; any other
  stream (cut out of a longer one, open GOP at the start) loses frames in the decoder, so it is counted by
  decoding everything once without RGB conversion, and the picks are taken by that count (flag
  ``counted_by_full_decode``): exactly the reference's definition, just slower.
* Verification: the sequential strategy checks that every kept frame carries the pts its position predicts
  (the i-th smallest packet pts) and the seek strategy that every pick was output; a failure falls back to the
  full-decode count above. (A packet in the middle of the stream that decodes to no frame is noticed by the
  sequential strategy only before its last pick, and not by the seek strategy.)

**Strategies** (all return the same frames; ``read_frames`` keeps only the K picked frames in memory):

* ``"sequential"``: one pass from the first frame to the last pick, every frame decoded, frames identified
  by their position in the decoder's output (the reference's own definition; works without timestamps).
* ``"seek"``: frames identified by pts. For each pick, decoding starts at the last keyframe at or before it
  (in decode order, with pts <= the pick's); packets before that keyframe that no pick needs are skipped
  without being decoded, and packets of non-reference frames that are not picks are not decoded either
  (``skip_frame=NONREF``). Picks within one keyframe interval share one decoding run. Jumps skip packets in a
  forward demux instead of using FFmpeg's container seek, so they are exact in every container (webm without
  cues, avi, gif, mpeg-ps) and never land after the wanted frame.
* ``"auto"`` (default): the seek plan, jumping to a pick's keyframe only when that skips more than
  :data:`AUTO_MIN_SKIP` packets; ``"sequential"`` when pts cannot identify frames (missing or duplicate pts,
  e.g. raw .h264). Whether and how far it jumps therefore follows keyframe spacing and K: with x264's default
  keyint 250, K=5 on a 10 s clip decodes nearly every frame up to the last pick (minus non-reference
  frames), while K=5 on a 10-minute video decodes ~5 x 125 frames.

The second pass reuses the open container rewound to its start when its demuxer replays the scan's packets
exactly (checked packet by packet), else a freshly opened one. Display-rotation metadata is ignored, as the
reference ignored it.

**Too short** (fewer decoded frames than K): the same index formula is used, so indices repeat (a 1-frame
video yields K copies of its only frame) and ``flags`` holds ``"too_short"``.

**Audio** is read by :mod:`lib.data.audio` in a pass of its own over the audio stream (the extractor's
``audio`` option writes it next to the frame table as ``PREFIX.audio.tsv``, keyed by the same video id), so
the frame table keeps the reference layout.
"""

from __future__ import annotations

import base64
import bisect
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from PIL import Image

try:  # decoding video files needs PyAV; reading frames from TSV files (training) does not
    import av
    from av.video.reformatter import VideoReformatter
except ImportError:  # pragma: no cover - PyAV is a pinned dependency; this serves foreign environments
    av = None

STRATEGIES = ("auto", "sequential", "seek")

# "auto" jumps to the next pick's keyframe only when that skips more than this many packets. A jump costs a
# decoder drain + flush and no decoding, so any skip pays: bench/extract.py-style CPU timings of 0, 2, 8 and
# 32 were within 2 % of each other on the MSR-VTT sample and on 720p keyint-250 clips (K = 5, 16, 32), never
# jumping cost 10-35 % more and the sequential strategy 15-70 % more. 2 keeps runs whole across tiny gaps.
AUTO_MIN_SKIP = 2

# containers whose header frame count is the sample table itself (one entry per coded frame)
ISO_BMFF_FORMATS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2"}

JPEG_QUALITY = 75  # PIL's default, what the reference extractor used

_T = TypeVar("_T")


class VideoDecodeError(Exception):
    """A file that cannot be read as a video: missing, empty, corrupt, truncated, not a video, audio only."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass
class VideoFrames:
    """The K frames picked from one video.

    ``frames[i]`` is frame ``indices[i]`` (of ``n_frames`` decoded frames) as RGB uint8 (H, W, 3); a repeated
    index (a too-short video) repeats the same array object. ``times`` are the frames' presentation times in
    seconds; ``strategy`` is what actually ran, ``n_decoded`` how many packets were handed to the decoder (a
    cost measure). ``flags`` may hold ``too_short``, ``header_count_mismatch``, ``counted_by_full_decode``,
    ``seek_unavailable``.
    """

    frames: list[np.ndarray]
    indices: list[int]
    n_frames: int
    fps: float
    flags: list[str] = field(default_factory=list)
    times: list[float | None] = field(default_factory=list)
    strategy: str = "sequential"
    n_decoded: int = 0


def reference_frame_indices(n_frames: int, k: int) -> list[int]:
    """The reference extractor's picks: ``int(N * (i + 1))``, ``N = n_frames / (k + 1)``, ``i = 0..k-1``.

    Evenly spaced, both ends excluded. Computed in floating point exactly as the reference does (so a product
    that lands a hair below an integer truncates the same way). With ``n_frames < k`` indices repeat.
    """
    if n_frames < 1 or k < 1:
        raise ValueError(f"reference_frame_indices needs n_frames >= 1 and k >= 1, got {n_frames}, {k}")
    step = n_frames / (k + 1)
    return [int(step * (i + 1)) for i in range(k)]


# ------------------------------------------------------------------------------------------ containers


@contextmanager
def _open_video(path: str) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open ``path`` and return its first real video stream (cover art is not a video)."""
    if av is None:
        raise ImportError("decoding video files needs PyAV: pip install av (see pyproject.toml)")
    try:
        container = av.open(path, mode="r")
    except FileNotFoundError:
        raise VideoDecodeError(path, "file not found") from None
    except IsADirectoryError:
        raise VideoDecodeError(path, "a folder, not a video file") from None
    except PermissionError as e:
        raise VideoDecodeError(path, f"cannot be read ({_describe(e)})") from e
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoDecodeError(path, f"not a readable media file ({_describe(e)})") from e
    try:
        streams = [
            s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
        ]
        if not streams:
            kinds = sorted({s.type for s in container.streams})
            raise VideoDecodeError(path, f"no video stream (found: {', '.join(kinds) or 'no streams'})")
        stream = streams[0]
        # frame threading delays every output frame (costly at each jump) and measured no faster here
        stream.codec_context.thread_type = "SLICE"
        yield container, stream
    finally:
        container.close()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _header_frame_count(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> int:
    """The header's frame count where it is the sample table itself (ISO-BMFF), else 0 (unknown)."""
    formats = set(container.format.name.split(","))
    return stream.frames if formats & ISO_BMFF_FORMATS and stream.frames > 0 else 0


def _fps(stream: av.video.stream.VideoStream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


# ---------------------------------------------------------------------------------------- packet table


@dataclass
class _PacketTable:
    """Every non-empty packet of the video stream in decode order (what a demux pass sees)."""

    pts: list[int | None] = field(default_factory=list)
    keyframe: list[bool] = field(default_factory=list)
    discard: list[bool] = field(default_factory=list)

    def add(self, packet: av.Packet) -> None:
        self.pts.append(packet.pts)
        self.keyframe.append(packet.is_keyframe)
        self.discard.append(packet.is_discard)

    @property
    def n_packets(self) -> int:
        return len(self.pts)

    @property
    def n_frames(self) -> int:
        """Frames the decoder outputs if every packet decodes: discarded (pre-roll) packets output none."""
        return self.n_packets - sum(self.discard)

    def starts_clean(self) -> bool:
        """Whether every packet decodes to a frame as far as the structure tells: the stream starts on a
        keyframe and nothing is shown before it. Otherwise the decoder drops the frames whose references are
        missing, and only decoding can count what remains."""
        if not self.keyframe or not self.keyframe[0]:
            return False
        first = self.pts[0]
        return first is None or all(p is None or p >= first for p, d in zip(self.pts, self.discard) if not d)

    def presentation_pts(self) -> list[int] | None:
        """pts of the output frames in output order, or None when pts cannot identify frames."""
        shown = [p for p, d in zip(self.pts, self.discard) if not d]
        if any(p is None for p in shown) or len(set(shown)) != len(shown):
            return None
        return sorted(shown)


def _scan(path: str, container, stream) -> _PacketTable:
    table = _PacketTable()
    try:
        for packet in container.demux(stream):
            if packet.size:
                table.add(packet)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"corrupt data after packet {table.n_packets} ({_describe(e)})") from e
    return table


# ------------------------------------------------------------------------------------------- decoding


_local = threading.local()


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """``frame`` as RGB uint8 (H, W, 3), the same pixels as ``frame.to_ndarray(format="rgb24")``.

    Goes through one reformatter per thread: a fresh one per frame (what ``to_ndarray`` does) spends ~1 ms
    setting up swscale, ten times the conversion itself at 320x240.
    """
    if not hasattr(_local, "reformatter"):
        _local.reformatter = VideoReformatter()
    return _local.reformatter.reformat(frame, format="rgb24").to_ndarray()


class _Picker:
    """Collects wanted frames from the decoder's output, converting only those to RGB."""

    def __init__(self, time_base) -> None:
        self.time_base = time_base
        self.rgb: dict[int, np.ndarray] = {}
        self.time: dict[int, float | None] = {}
        self.pts: dict[int, int | None] = {}

    def keep(self, key: int, frame: av.VideoFrame) -> None:
        convert = getattr(_local, "convert", None)  # read_frames(convert=...): e.g. JPEG-encode it at once
        self.rgb[key] = to_rgb(frame) if convert is None else convert(to_rgb(frame))
        self.pts[key] = frame.pts
        # frame.time is NaN for frames drained from the decoder, so the time is computed from the stream's
        self.time[key] = None if frame.pts is None else float(frame.pts * self.time_base)


def _decode(path: str, ctx, packet: av.Packet | None, position: int) -> list[av.VideoFrame]:
    try:
        return ctx.decode(packet)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"decoding failed at packet {position} ({_describe(e)})") from e


class _Misaligned(Exception):
    """A second demux pass did not replay the packets of the first one."""


def _check_aligned(expected: _PacketTable | None, position: int, packet: av.Packet) -> None:
    if expected is not None and (
        position >= expected.n_packets
        or packet.pts != expected.pts[position]
        or packet.is_keyframe != expected.keyframe[position]
    ):
        raise _Misaligned


def _replay(path: str, container, stream, run: Callable[[Any, Any], _T]) -> _T:
    """Run ``run(container, stream)`` as a second pass over the file: on the open container rewound to its
    start (saves re-opening it, ~3 ms), or on a fresh one where rewinding fails or does not replay the first
    pass (``run`` raises :class:`_Misaligned`)."""
    try:
        container.seek(0, stream=stream, backward=True)
    except (av.error.FFmpegError, OSError):  # e.g. raw elementary streams cannot seek
        pass
    else:
        try:
            return run(container, stream)
        except _Misaligned:
            pass
    with _open_video(path) as (fresh, fresh_stream):
        try:
            return run(fresh, fresh_stream)
        except _Misaligned:
            raise VideoDecodeError(path, "two demux passes over the file disagree") from None


def _decode_by_count(
    path: str, container, stream, wanted: set[int], complete_table: bool, expected: _PacketTable | None = None
) -> tuple[_Picker, _PacketTable, int, int]:
    """Decode from the start; keep output frames whose position is in ``wanted``.

    Stops decoding after the last wanted frame (decoding all when ``wanted`` is empty); with
    ``complete_table`` the remaining packets are still demuxed, without decoding, to complete the table.
    Packets are checked against an ``expected`` table from an earlier pass. Returns (picker, table, frames
    output, packets decoded).
    """
    ctx = stream.codec_context
    picker, table = _Picker(stream.time_base), _PacketTable()
    last = max(wanted) if wanted else None
    n_out = n_sent = 0
    decoding = True
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            _check_aligned(expected, table.n_packets, packet)
            table.add(packet)
            if not decoding:
                continue
            n_sent += 1
            for frame in _decode(path, ctx, packet, table.n_packets - 1):
                if n_out in wanted:
                    picker.keep(n_out, frame)
                n_out += 1
            if last is not None and n_out > last:
                decoding = False
                if not complete_table:
                    break
        if decoding:
            for frame in _decode(path, ctx, None, table.n_packets):
                if n_out in wanted:
                    picker.keep(n_out, frame)
                n_out += 1
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"corrupt data after packet {table.n_packets} ({_describe(e)})") from e
    return picker, table, n_out, n_sent


def _keyframe_start(table: _PacketTable, keyframes: list[int], position: int) -> int:
    """Decode position to start from for the frame in packet ``position``: the last keyframe at or before it
    whose pts is not after the frame's (an open-GOP leading picture needs the keyframe before)."""
    i = bisect.bisect_right(keyframes, position) - 1
    while i >= 0 and table.pts[keyframes[i]] > table.pts[position]:
        i -= 1
    return keyframes[i] if i >= 0 else 0


def _plan_segments(table: _PacketTable, positions: list[int], min_skip: int) -> list[tuple[int, int]]:
    """Decode-order runs ``(start, end)`` covering every wanted packet position, jumping over a gap only when
    it is longer than ``min_skip`` packets."""
    keyframes = [i for i, key in enumerate(table.keyframe) if key]
    segments: list[tuple[int, int]] = []
    for position in sorted(set(positions)):
        start = _keyframe_start(table, keyframes, position)
        if segments and start <= segments[-1][1] + 1 + min_skip:
            segments[-1] = (segments[-1][0], max(segments[-1][1], position))
        else:
            segments.append((start, position))
    return segments


def _decode_by_pts(
    path: str, container, stream, table: _PacketTable, wanted_pts: set[int], min_skip: int
) -> tuple[_Picker, int]:
    """Decode only the runs of packets the wanted frames need; keep output frames by pts."""
    position_of = {pts: i for i, (pts, d) in enumerate(zip(table.pts, table.discard)) if not d}
    segments = _plan_segments(table, [position_of[p] for p in wanted_pts], min_skip)
    ctx = stream.codec_context
    picker = _Picker(stream.time_base)
    n_sent = 0

    def collect(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            if frame.pts in wanted_pts and frame.pts not in picker.rgb:
                picker.keep(frame.pts, frame)

    seg = 0
    position = -1
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            position += 1
            _check_aligned(table, position, packet)
            start, end = segments[seg]
            if position < start:
                continue
            ctx.skip_frame = "DEFAULT" if packet.pts in wanted_pts else "NONREF"
            n_sent += 1
            collect(_decode(path, ctx, packet, position))
            if position == end:
                collect(_decode(path, ctx, None, position))  # drain what the decoder holds back
                ctx.flush_buffers()
                seg += 1
                if seg == len(segments):
                    break
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"corrupt data after packet {position} ({_describe(e)})") from e
    finally:
        ctx.skip_frame = "DEFAULT"
    return picker, n_sent


# ---------------------------------------------------------------------------------------------- public


def read_frames(
    path: str | os.PathLike,
    k: int,
    strategy: str = "auto",
    convert: Callable[[np.ndarray], Any] | None = None,
) -> VideoFrames:
    """The ``k`` frames the reference extractor picks from ``path`` (see the module docstring for the rules).

    ``convert`` (e.g. JPEG encoding) is applied to each picked frame as soon as it is decoded, and
    ``frames`` holds what it returns: memory then holds ``k`` converted frames, never ``k`` RGB ones (many
    frames of long or high-resolution videos, :mod:`lib.data.long_video`).
    Raises :class:`VideoDecodeError` for a missing, empty, corrupt, truncated, non-video or audio-only file.
    """
    _local.convert = convert  # read by this thread's pickers (_Picker.keep) during this call
    try:
        return _read_frames(path, k, strategy)
    finally:
        _local.convert = None


def _read_frames(path: str | os.PathLike, k: int, strategy: str) -> VideoFrames:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    path = os.fspath(path)
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise VideoDecodeError(path, "empty file (0 bytes)")

    with _open_video(path) as (container, stream):
        fps = _fps(stream)
        header = _header_frame_count(container, stream)
        if strategy == "sequential" and header:
            return _sequential_from_header(path, container, stream, k, header, fps)
        table = _scan(path, container, stream)
        _check_table(path, table, header)
        if not table.starts_clean():
            return _counted_by_full_decode(path, k, fps, [])
        shown = table.presentation_pts()
        if strategy == "sequential" or shown is None:
            flags = ["seek_unavailable"] if strategy == "seek" else []
            return _sequential(path, container, stream, table, k, fps, flags)
        min_skip = 0 if strategy == "seek" else AUTO_MIN_SKIP
        return _by_pts(path, container, stream, table, k, fps, min_skip)


def _check_table(path: str, table: _PacketTable, header: int) -> None:
    if table.n_frames == 0:
        raise VideoDecodeError(path, "the video stream holds no frames")
    if header and table.n_packets < header:
        raise VideoDecodeError(
            path, f"truncated: the header lists {header} frames but only {table.n_packets} could be read"
        )


def _result(
    picker: _Picker, keys: list[int], indices: list[int], n_frames: int, fps: float, **kw
) -> VideoFrames:
    flags = kw.pop("flags", [])
    if n_frames < len(indices):
        flags = ["too_short", *flags]
    return VideoFrames(
        frames=[picker.rgb[key] for key in keys],
        indices=indices,
        n_frames=n_frames,
        fps=fps,
        flags=flags,
        times=[picker.time[key] for key in keys],
        **kw,
    )


def _sequential(
    path: str, container, stream, table: _PacketTable, k: int, fps: float, flags: list[str]
) -> VideoFrames:
    """Decode from the start, picking by output position; verified against the first pass's pts."""
    indices = reference_frame_indices(table.n_frames, k)
    picker, _, _, n_sent = _replay(
        path, container, stream, lambda c, s: _decode_by_count(path, c, s, set(indices), False, table)
    )
    if not _count_verified(picker, indices, table.presentation_pts()):
        return _counted_by_full_decode(path, k, fps, flags)
    return _result(
        picker, indices, indices, table.n_frames, fps, flags=flags, strategy="sequential", n_decoded=n_sent
    )


def _sequential_from_header(path: str, container, stream, k: int, header: int, fps: float) -> VideoFrames:
    """Sequential picks by the header's count, checked against the packets of the same pass."""
    indices = reference_frame_indices(header, k)
    picker, table, _, n_sent = _decode_by_count(path, container, stream, set(indices), complete_table=True)
    _check_table(path, table, header)
    if not table.starts_clean():
        return _counted_by_full_decode(path, k, fps, [])
    if table.n_frames == header and _count_verified(picker, indices, table.presentation_pts()):
        return _result(picker, indices, indices, header, fps, strategy="sequential", n_decoded=n_sent)
    return _sequential(path, container, stream, table, k, fps, ["header_count_mismatch"])


def _count_verified(picker: _Picker, indices: list[int], shown: list[int] | None) -> bool:
    """Every pick was output, and (when pts are known) with the pts its position predicts."""
    if any(i not in picker.rgb for i in indices):
        return False
    return shown is None or all(picker.pts[i] == shown[i] for i in indices)


def _counted_by_full_decode(path: str, k: int, fps: float, flags: list[str]) -> VideoFrames:
    """The reference's definition, literally: count every decoded frame, then pick by output position."""
    with _open_video(path) as (container, stream):
        _, _, n_frames, _ = _decode_by_count(path, container, stream, set(), complete_table=False)
    if n_frames == 0:
        raise VideoDecodeError(path, "no frame could be decoded")
    indices = reference_frame_indices(n_frames, k)
    with _open_video(path) as (container, stream):
        picker, _, _, n_sent = _decode_by_count(path, container, stream, set(indices), complete_table=False)
    if any(i not in picker.rgb for i in indices):
        raise VideoDecodeError(path, "the decoder output differs between two passes over the file")
    flags = [*flags, "counted_by_full_decode"]
    return _result(
        picker, indices, indices, n_frames, fps, flags=flags, strategy="sequential", n_decoded=n_sent
    )


def _by_pts(
    path: str, container, stream, table: _PacketTable, k: int, fps: float, min_skip: int
) -> VideoFrames:
    shown = table.presentation_pts()
    indices = reference_frame_indices(len(shown), k)
    keys = [shown[i] for i in indices]
    picker, n_sent = _replay(
        path, container, stream, lambda c, s: _decode_by_pts(path, c, s, table, set(keys), min_skip)
    )
    if any(key not in picker.rgb for key in keys):  # the decoder dropped a frame: the count itself is off
        return _counted_by_full_decode(path, k, fps, [])
    return _result(picker, keys, indices, len(shown), fps, strategy="seek", n_decoded=n_sent)


# ------------------------------------------------------------------------------------------------ JPEG


def encode_jpeg(rgb: np.ndarray, quality: int = JPEG_QUALITY, size_short: int | None = None) -> bytes:
    """JPEG-encode an RGB uint8 (H, W, 3) frame with PIL and return it base64-encoded (ASCII bytes).

    With the defaults this is byte-for-byte what the reference extractor stored (PIL, quality 75, original
    resolution, 4:2:0). ``size_short`` downscales so the shorter side is ``size_short`` pixels (aspect kept,
    bicubic with antialiasing); frames already that small are not enlarged.
    """
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"encode_jpeg needs an RGB uint8 array (H, W, 3), got {rgb.dtype} {rgb.shape}")
    image = Image.fromarray(rgb)
    if size_short is not None and min(image.size) > size_short:
        width, height = image.size
        scale = size_short / min(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return base64.b64encode(buffer.getvalue())
