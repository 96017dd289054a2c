"""lib.data.video: the reference's picks from real encoded files with every strategy; broken inputs; JPEG."""

from __future__ import annotations

import base64
import io

import av
import numpy as np
import pytest
from PIL import Image

from lib.data import video
from lib.data.video import (
    VideoDecodeError,
    encode_jpeg,
    read_frames,
    reference_frame_indices,
)

STRATEGIES = ("sequential", "seek", "auto")


# ------------------------------------------------------------------------------------- the index rule


def test_reference_indices_match_the_reference_rows():
    # frame counts of the shared MSR-VTT sample and the picks its README states
    assert reference_frame_indices(270, 5) == [45, 90, 135, 180, 225]
    assert reference_frame_indices(390, 5) == [65, 130, 195, 260, 325]
    assert reference_frame_indices(504, 5) == [84, 168, 252, 336, 420]


def test_reference_indices_are_evenly_spaced_without_endpoints():
    indices = reference_frame_indices(100, 3)
    assert indices == [25, 50, 75]
    assert reference_frame_indices(10, 1) == [5]
    assert reference_frame_indices(7, 7) == list(range(7))  # n == k: every frame once


def test_reference_indices_use_the_reference_float_arithmetic():
    # 90/33 * 11 is 29.999999999999996 in floating point: the reference truncates it to 29, where exact
    # integer arithmetic (90 * 11 // 33) would say 30
    assert reference_frame_indices(90, 32)[10] == 29
    assert reference_frame_indices(90, 32)[21] == 59
    assert reference_frame_indices(180, 32)[10] == 59


def test_reference_indices_repeat_for_too_short_videos():
    assert reference_frame_indices(1, 5) == [0, 0, 0, 0, 0]
    assert reference_frame_indices(3, 5) == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        reference_frame_indices(0, 5)
    with pytest.raises(ValueError):
        reference_frame_indices(5, 0)


# ------------------------------------------------------------------------------ picks on real files


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_picks_are_the_reference_frames(
    videos, video_specs, index_code, reference_decode, video_name, strategy
):
    path = videos[video_name]
    everything = reference_decode(path)  # the reference: decode all, then pick
    assert len(everything) == video_specs[video_name][1]
    for k in (1, 5, 16):
        result = read_frames(path, k, strategy=strategy)
        expected = reference_frame_indices(len(everything), k)
        assert result.n_frames == len(everything)
        assert result.indices == expected
        assert [index_code.read(frame) for frame in result.frames] == expected
        for got, i in zip(result.frames, expected):
            np.testing.assert_array_equal(got, everything[i])
        assert set(result.flags) <= {"seek_unavailable"}  # (no timestamps in a raw stream)
        assert len(result.times) == k


def test_seek_decodes_less_on_short_gops(videos):
    path = videos["h264_short_gop_mp4"]  # keyframe every 10 frames
    sequential = read_frames(path, 3, strategy="sequential")
    seek = read_frames(path, 3, strategy="seek")
    assert sequential.strategy == "sequential" and seek.strategy == "seek"
    # picks 22, 45, 67: sequential decodes 68+ packets, seek ~3 runs from the keyframes 20, 40, 60
    assert sequential.n_decoded >= 68
    assert seek.n_decoded <= 3 * 10
    intra = videos["mjpeg_mkv"]  # every frame a keyframe: exactly the picks are decoded
    assert read_frames(intra, 5, strategy="seek").n_decoded == 5


def test_plan_jumps_only_over_gaps_longer_than_min_skip(videos):
    path = str(videos["h264_short_gop_mp4"])  # keyframes every 10 packets
    with video._open_video(path) as (container, stream):
        table = video._scan(path, container, stream)
    keyframes = {i for i, key in enumerate(table.keyframe) if key}
    position_of = {pts: i for i, pts in enumerate(table.pts)}
    shown = table.presentation_pts()
    picks = sorted(position_of[shown[i]] for i in reference_frame_indices(90, 16))
    n_segments = []
    for min_skip in (0, video.AUTO_MIN_SKIP, 8, 1000):
        segments = video._plan_segments(table, picks, min_skip)
        assert all(start in keyframes for start, _ in segments)
        assert all(any(a <= p <= b for a, b in segments) for p in picks)
        assert all(b[0] - a[1] - 1 > min_skip for a, b in zip(segments, segments[1:]))
        n_segments.append(len(segments))
    assert n_segments[0] > 1 and n_segments[-1] == 1
    assert n_segments == sorted(n_segments, reverse=True)


def test_without_timestamps_frames_are_picked_by_position(videos, index_code):
    path = videos["raw_h264"]  # Annex-B stream: no pts, no header count
    for strategy in STRATEGIES:
        result = read_frames(path, 4, strategy=strategy)
        assert result.strategy == "sequential"
        assert [index_code.read(f) for f in result.frames] == reference_frame_indices(40, 4)
    assert read_frames(path, 4, strategy="seek").flags == ["seek_unavailable"]


def test_variable_frame_rate_times_follow_the_pts(videos, index_code):
    result = read_frames(videos["vfr_mp4"], 5, strategy="seek")
    expected = reference_frame_indices(60, 5)
    assert [index_code.read(f) for f in result.frames] == expected
    assert result.times == pytest.approx([(i * i + 3 * i) / 1000 for i in expected], abs=1e-3)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_frame_video_yields_k_copies_flagged(one_frame_video, index_code, strategy):
    result = read_frames(one_frame_video, 5, strategy=strategy)
    assert result.n_frames == 1
    assert result.indices == [0] * 5
    assert len(result.frames) == 5 and all(index_code.read(f) == 0 for f in result.frames)
    assert result.flags == ["too_short"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_too_short_video_repeats_by_the_same_formula(three_frame_video, index_code, strategy):
    result = read_frames(three_frame_video, 5, strategy=strategy)
    assert result.indices == [0, 1, 1, 2, 2]
    assert [index_code.read(f) for f in result.frames] == [0, 1, 1, 2, 2]
    assert "too_short" in result.flags


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_long_720p_clip_with_default_keyint(hd_video, index_code, strategy):
    with av.open(str(hd_video)) as container:
        keyframes = [i for i, p in enumerate(container.demux(video=0)) if p.is_keyframe]
    assert keyframes == [0, 250]  # x264's default keyint
    for k in (5, 32):
        result = read_frames(hd_video, k, strategy=strategy)
        assert result.frames[0].shape == (720, 1280, 3)
        assert [index_code.read(f) for f in result.frames] == reference_frame_indices(300, k)
    if strategy != "sequential":  # K=5: picks 50..250; the last lies on the second keyframe
        assert read_frames(hd_video, 5, strategy=strategy).n_decoded < 220


# --------------------------------------------------------------------------- frame-count verification


def test_wrong_header_count_is_detected_and_redone(videos, index_code):
    path = videos["h264_mp4"]
    with video._open_video(str(path)) as (container, stream):
        assert video._header_frame_count(container, stream) == 90
        result = video._sequential_from_header(str(path), container, stream, 5, 80, 25.0)
    assert result.flags == ["header_count_mismatch"]
    assert result.n_frames == 90
    assert [index_code.read(f) for f in result.frames] == reference_frame_indices(90, 5)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stream_not_starting_on_a_keyframe_is_counted_by_decoding(
    videos, video_dir, remux_video, reference_decode, strategy
):
    # the first GOP's keyframe is cut away: the decoder drops the frames that depended on it, so packets
    # outnumber decoded frames; the reference's count is what the decoder outputs
    cut = remux_video(videos["h264_mkv"], video_dir / f"cut_{strategy}.mkv", skip_first=1)
    everything = reference_decode(cut)
    assert len(everything) < 59
    result = read_frames(cut, 4, strategy=strategy)
    assert result.n_frames == len(everything)
    assert result.indices == reference_frame_indices(len(everything), 4)
    for got, i in zip(result.frames, result.indices):
        np.testing.assert_array_equal(got, everything[i])
    assert "counted_by_full_decode" in result.flags


def test_second_pass_that_disagrees_with_the_first_is_an_error(videos):
    path, other = str(videos["h264_mp4"]), str(videos["mpeg2_mpg"])  # other timestamps
    with video._open_video(other) as (container, stream):
        other_table = video._scan(other, container, stream)
    with video._open_video(path) as (container, stream), pytest.raises(VideoDecodeError, match="disagree"):
        video._replay(
            path, container, stream, lambda c, s: video._decode_by_count(path, c, s, {0}, False, other_table)
        )


# ------------------------------------------------------------------------------------------ failures


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("zero_bytes", "empty file"),
        ("text", "not a readable media file"),
        ("truncated", "not a readable media file"),
        ("truncated_faststart", "truncated"),
    ],
)
def test_broken_files_raise_a_decode_error(broken_files, name, reason):
    path = broken_files[name]
    for strategy in STRATEGIES:
        with pytest.raises(VideoDecodeError, match=reason) as info:
            read_frames(path, 5, strategy=strategy)
        assert info.value.path == str(path)
        assert str(path) in str(info.value)


def test_audio_only_and_missing_files(audio_only_file, tmp_path):
    with pytest.raises(VideoDecodeError, match="no video stream .*audio"):
        read_frames(audio_only_file, 5)
    with pytest.raises(VideoDecodeError, match="file not found"):
        read_frames(tmp_path / "nope.mp4", 5)


def test_bad_arguments(videos):
    with pytest.raises(ValueError, match="strategy"):
        read_frames(videos["h264_mp4"], 5, strategy="fast")
    with pytest.raises(ValueError, match="k must be"):
        read_frames(videos["h264_mp4"], 0)


# ---------------------------------------------------------------------------------------------- JPEG


def _decode_b64(b64: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def test_encode_jpeg_is_pil_default_quality_base64(index_code):
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    rgb[:24] = index_code.frame(5, 24, 64)
    b64 = encode_jpeg(rgb)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG")  # PIL defaults: what the reference stored
    assert b64 == base64.b64encode(buffer.getvalue())
    assert b64.isascii() and b64.startswith(b"/9j/")
    assert encode_jpeg(rgb, quality=95) != b64


def test_encode_jpeg_size_short_downscales_only():
    rgb = np.zeros((240, 320, 3), np.uint8)
    rgb[:, 160:] = 200
    small = _decode_b64(encode_jpeg(rgb, size_short=120))
    assert small.shape == (120, 160, 3)
    assert abs(int(small[60, 40, 0]) - 0) < 8 and abs(int(small[60, 120, 0]) - 200) < 8
    assert _decode_b64(encode_jpeg(rgb, size_short=480)).shape == (240, 320, 3)


def test_encode_jpeg_rejects_non_rgb():
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_jpeg(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        encode_jpeg(np.zeros((4, 4, 3), np.float32))
