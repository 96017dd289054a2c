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


def _mux_audio(
    out: av.container.OutputContainer,
    stream: av.audio.stream.AudioStream,
    chunks: Iterable[tuple[int, np.ndarray]],
    sample_format: str,
    layout: str,
    rate: int,
) -> None:
    """Encode (first sample, (channels, n) samples) chunks into ``stream`` and flush it."""
    for start, samples in chunks:
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format=sample_format, layout=layout)
        frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


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

            def pieces() -> Iterable[tuple[int, np.ndarray]]:
                for start in range(0, n, rate):
                    t = np.arange(start, min(n, start + rate)) / rate
                    waves = np.stack([amplitude * np.sin(2 * np.pi * f * t) for f in tones])
                    yield start, (waves * 32767).astype(np.int16)

            _mux_audio(out, audio, pieces(), "s16p", layout, rate)

    return write_atomic_path(path, encode)


AUDIO_CODECS = {"aac": "fltp", "libopus": "flt"}
"""Audio encoders of :func:`write_av_video` -> the sample format they take (PyAV's wheel bundles both)."""


def write_av_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    fps: int,
    audio: np.ndarray | None,
    rate: int = 48000,
    audio_codec: str = "aac",
    options: dict[str, str] | None = None,
) -> Path:
    """RGB uint8 frames (H, W, 3) as H.264 and, unless ``audio`` is None (then the file has no audio
    stream at all), mono float samples in [-1, 1] at ``rate`` encoded with ``audio_codec`` (``aac`` or
    ``libopus``; Opus takes 48 kHz), in a Matroska file (``.mkv``) or MP4 (``.mp4``, AAC only)."""
    if audio_codec not in AUDIO_CODECS:
        raise ValueError(f"audio_codec must be one of {sorted(AUDIO_CODECS)}, got {audio_codec!r}")
    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError(f"write_av_video({path}): no frames given")

    def encode(tmp: Path) -> None:
        fmt = "matroska" if Path(path).suffix.lower() in (".mkv", ".webm") else None
        with av.open(str(tmp), "w", format=fmt) as out:
            video = out.add_stream("libx264", rate=fps)
            video.height, video.width = frames[0].shape[:2]
            video.pix_fmt = "yuv420p"
            video.options = dict(options or {"preset": "ultrafast", "threads": "1"})
            sound = None
            if audio is not None:
                sound = out.add_stream(audio_codec, rate=rate)
                sound.layout = "mono"
            for i, frame in enumerate(frames):
                picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
                picture.pts = i
                for packet in video.encode(picture):
                    out.mux(packet)
            for packet in video.encode():
                out.mux(packet)
            if sound is None:
                return
            samples = np.asarray(audio, np.float32).reshape(-1)
            size = sound.codec_context.frame_size or 1024
            padded = np.zeros(-(-len(samples) // size) * size, np.float32)  # whole frames of frame_size
            padded[: len(samples)] = samples
            chunks = ((i, padded[None, i : i + size]) for i in range(0, len(padded), size))
            _mux_audio(out, sound, chunks, AUDIO_CODECS[audio_codec], "mono", rate)

    return write_atomic_path(path, encode)
