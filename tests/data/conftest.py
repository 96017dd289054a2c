"""Real encoded videos for the video-reading and extraction tests, made with PyAV (lib.data.video_write).

Every frame shows its own index as a 2x5 grid of black/white cells (bit b of the index = cell b), which
survives every codec used here (even GIF's 8-bit palette), so a test can read back which frame came out.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from lib.data.video_write import write_video

ROWS, COLS = 2, 5  # the index is written in ROWS * COLS bits


class IndexCode:
    """Write a frame index into an RGB frame and read it back."""

    @staticmethod
    def frame(index: int, height: int = 96, width: int = 128) -> np.ndarray:
        frame = np.full((height, width, 3), 60, np.uint8)
        cell_h, cell_w = height // ROWS, width // COLS
        for bit in range(ROWS * COLS):
            r, c = divmod(bit, COLS)
            value = 255 if (index >> bit) & 1 else 0
            frame[r * cell_h + 3 : (r + 1) * cell_h - 3, c * cell_w + 3 : (c + 1) * cell_w - 3] = value
        return frame

    @staticmethod
    def read(frame: np.ndarray) -> int:
        height, width = frame.shape[:2]
        cell_h, cell_w = height // ROWS, width // COLS
        index = 0
        for bit in range(ROWS * COLS):
            r, c = divmod(bit, COLS)
            cell = frame[r * cell_h + cell_h // 4 : (r + 1) * cell_h - cell_h // 4,
                         c * cell_w + cell_w // 4 : (c + 1) * cell_w - cell_w // 4]  # fmt: skip
            index |= int(cell.mean() > 128) << bit
        return index

    @classmethod
    def frames(cls, n: int, height: int = 96, width: int = 128) -> list[np.ndarray]:
        return [cls.frame(i, height, width) for i in range(n)]


@pytest.fixture(scope="session")
def index_code() -> type[IndexCode]:
    return IndexCode


def decode_all(path: Path) -> list[np.ndarray]:
    """Every frame the decoder outputs, as RGB: the reference extractor's list (the ground truth)."""
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.fixture(scope="session")
def reference_decode():
    return decode_all


# name -> (file name, frame count, write_video keyword arguments)
VIDEO_SPECS: dict[str, tuple[str, int, dict]] = {
    "h264_mp4": ("h264.mp4", 90, {}),  # x264 defaults: B-frames, one keyframe (keyint 250)
    "h264_short_gop_mp4": ("h264_gop10.mp4", 90, {"options": {"g": "10"}}),
    "h264_mkv": ("h264.mkv", 60, {"options": {"g": "12"}}),
    "h264_mov": ("h264.mov", 40, {}),
    "vp9_webm": ("vp9.webm", 60, {"options": {"g": "15"}}),
    "mpeg4_avi": ("mpeg4.avi", 60, {"options": {"g": "12", "bf": "2"}}),
    "mjpeg_avi": ("mjpeg.avi", 40, {"codec": "mjpeg"}),
    "mjpeg_mkv": ("mjpeg.mkv", 40, {"codec": "mjpeg"}),
    "gif": ("anim.gif", 30, {"codec": "gif", "pix_fmt": "rgb8"}),
    "mpeg2_mpg": ("mpeg2.mpg", 50, {"codec": "mpeg2video", "options": {"g": "12", "bf": "2"}}),
    "vfr_mp4": ("vfr.mp4", 60, {"pts": [i * i + 3 * i for i in range(60)], "time_base": Fraction(1, 1000)}),
    "raw_h264": ("raw.h264", 40, {}),  # no timestamps at all: identified by output position only
}


def pytest_generate_tests(metafunc):
    """``video_name`` runs a test once per video of :data:`VIDEO_SPECS`."""
    if "video_name" in metafunc.fixturenames:
        metafunc.parametrize("video_name", list(VIDEO_SPECS))


@pytest.fixture(scope="session")
def video_specs() -> dict[str, tuple[str, int, dict]]:
    return VIDEO_SPECS


@pytest.fixture(scope="session")
def video_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def videos(video_dir) -> dict[str, Path]:
    """One small real video per container/codec of :data:`VIDEO_SPECS`; frame i shows index i."""
    made = {}
    for name, (file_name, n, kwargs) in VIDEO_SPECS.items():
        made[name] = write_video(video_dir / file_name, IndexCode.frames(n), fps=25, **kwargs)
    return made


@pytest.fixture(scope="session")
def one_frame_video(video_dir) -> Path:
    return write_video(video_dir / "single.mp4", IndexCode.frames(1), fps=25)


@pytest.fixture(scope="session")
def three_frame_video(video_dir) -> Path:
    return write_video(video_dir / "three.mp4", IndexCode.frames(3), fps=25)


@pytest.fixture(scope="session")
def hd_video(video_dir) -> Path:
    """1280x720, 300 frames at 30 fps, x264 ultrafast with its default keyint 250 (keyframes at 0 and 250)."""
    frames = (IndexCode.frame(i, 720, 1280) for i in range(300))
    return write_video(video_dir / "hd720.mp4", frames, fps=30, options={"preset": "ultrafast"})


@pytest.fixture(scope="session")
def audio_only_file(video_dir) -> Path:
    """An .m4a holding one AAC stream (1 s of a 440 Hz tone) and no video."""
    path = video_dir / "tone.m4a"
    rate = 44100
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        t = np.arange(rate, dtype=np.float32) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, rate, 1024):
            chunk = samples[None, start : start + 1024]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def remux(source: Path, target: Path, skip_first: int = 0, container_options: dict | None = None) -> Path:
    """Copy the video packets of ``source`` into ``target`` without re-encoding, dropping the first
    ``skip_first`` packets (a stream cut so that it no longer starts on a keyframe)."""
    with av.open(str(source)) as src, av.open(str(target), "w", options=container_options or {}) as dst:
        in_stream = src.streams.video[0]
        out_stream = dst.add_stream_from_template(in_stream)
        for i, packet in enumerate(src.demux(in_stream)):
            if packet.size == 0 or i < skip_first:
                continue
            packet.stream = out_stream
            dst.mux(packet)
    return target


@pytest.fixture(scope="session")
def remux_video():
    return remux


@pytest.fixture(scope="session")
def broken_files(video_dir, videos) -> dict[str, Path]:
    """Files that are not readable videos, each for a different reason."""
    good = videos["h264_mp4"].read_bytes()
    files = {
        "zero_bytes": video_dir / "empty.mp4",
        "text": video_dir / "notes.mp4",
        "truncated": video_dir / "truncated.mp4",  # moov atom (at the end) cut away
    }
    files["zero_bytes"].write_bytes(b"")
    files["text"].write_text("this is a text file with a video suffix\n" * 20)
    files["truncated"].write_bytes(good[: len(good) // 2])
    faststart = remux(
        videos["h264_mp4"], video_dir / "faststart.mp4", container_options={"movflags": "faststart"}
    )
    data = faststart.read_bytes()
    files["truncated_faststart"] = video_dir / "truncated_faststart.mp4"  # index intact, media data cut
    files["truncated_faststart"].write_bytes(data[: len(data) * 2 // 3])
    return files
