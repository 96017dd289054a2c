"""Encode frames into a real video file with PyAV (used by tests, benchmarks and the demo data).

No ffmpeg binary is needed: PyAV's wheel bundles encoders for h264, vp9, mpeg4 and mjpeg.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from lib.utils.atomic import write_atomic_path

# container suffix -> (codec, pixel format) that the suffix is normally written with
DEFAULT_CODECS: dict[str, tuple[str, str]] = {
    ".mp4": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
}


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: float = 25.0,
    codec: str | None = None,
    pix_fmt: str | None = None,
    options: dict[str, str] | None = None,
    pts: Iterable[int] | None = None,
    time_base: Fraction | None = None,
) -> Path:
    """Write RGB uint8 frames (H, W, 3) to ``path``; the codec follows the suffix unless given.

    ``pts``/``time_base`` give explicit presentation times (for variable-frame-rate files).
    ``options`` are passed to the encoder (e.g. ``{"g": "250", "crf": "23"}`` for x264).
    The file is written under a temporary name and renamed, so a crash never leaves half a video.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    default_codec, default_fmt = DEFAULT_CODECS.get(suffix, ("libx264", "yuv420p"))
    codec = codec or default_codec
    pix_fmt = pix_fmt or ("yuvj420p" if codec == "mjpeg" else default_fmt)
    pts_iter = iter(pts) if pts is not None else None

    def encode(tmp: Path) -> None:
        n = 0
        with av.open(str(tmp), mode="w") as container:
            rate = Fraction(fps).limit_denominator(1000)
            stream = container.add_stream(codec, rate=rate)
            stream.pix_fmt = pix_fmt
            if options:
                stream.options = dict(options)
            if time_base is not None:
                stream.codec_context.time_base = time_base
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if n == 0:
                    stream.height, stream.width = frame.shape[:2]
                vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
                if pts_iter is not None:
                    vf.pts = next(pts_iter)
                    if time_base is not None:
                        vf.time_base = time_base
                for packet in stream.encode(vf):
                    container.mux(packet)
                n += 1
            if n == 0:
                raise ValueError(f"write_video({path}): no frames given")
            for packet in stream.encode():
                container.mux(packet)

    return write_atomic_path(path, encode)


def write_tone_video(
    path: str | os.PathLike,
    seconds: float,
    fps: int = 5,
    size: tuple[int, int] = (48, 64),
    rate: int = 44100,
    tones: tuple[float, ...] = (440.0, 880.0),
    amplitude: float = 0.25,
) -> Path:
    """A Matroska video with an audio track: grey frames (their level counts up) and one sine tone per audio
    channel (``tones``: 440 Hz left, 880 Hz right by default), FLAC, streamed in 1 s pieces (any length)."""
    height, width = size
    layout = {1: "mono", 2: "stereo"}[len(tones)]

    def encode(tmp: Path) -> None:
        with av.open(str(tmp), "w", format="matroska") as out:
            video = out.add_stream("mpeg4", rate=fps)
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            audio = out.add_stream("flac", rate=rate)
            audio.layout = layout
            for i in range(int(seconds * fps)):
                frame = av.VideoFrame.from_ndarray(
                    np.full((height, width, 3), i % 255, np.uint8), format="rgb24"
                )
                frame.pts = i
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
            n = int(seconds * rate)
            for start in range(0, n, rate):
                t = np.arange(start, min(n, start + rate)) / rate
                waves = np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in tones])
                frame = av.AudioFrame.from_ndarray(
                    (waves * 32767).astype(np.int16), format="s16p", layout=layout
                )
                frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
                for packet in audio.encode(frame):
                    out.mux(packet)
            for packet in audio.encode():
                out.mux(packet)

    return write_atomic_path(path, encode)
