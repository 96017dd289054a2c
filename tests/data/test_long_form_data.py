"""Long-form data: many frames of a video with seeks and JPEG-on-decode, rows with times in the same store,
multi-clip sampling (whole video / within timestamps), the dataset, and non-square clips."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from lib.data.datasets import VideoStore
from lib.data.frames import ClipTransform, decode_jpeg
from lib.data.long_video import extract_long_videos, parse_meta, read_long_video
from lib.data.multi_clip import (
    MultiClipDataset,
    frame_mask,
    merge_segments,
    span_indices,
    stack_multi_clips,
    stored_times,
    whole_video_indices,
)
from lib.data.tsv import TSVWriter, frame_columns
from lib.data.video import read_frames, reference_frame_indices
from lib.data.video_write import write_video

FPS = 25


@pytest.fixture(scope="module")
def long_video(tmp_path_factory, index_code):
    """8 s at 25 fps (200 frames), a keyframe every second: frame i shows the number i."""
    folder = tmp_path_factory.mktemp("long")
    return write_video(folder / "walk.mp4", index_code.frames(200), fps=FPS, options={"g": str(FPS)})


def test_many_frames_are_encoded_as_they_are_decoded(long_video, index_code):
    row = read_long_video(long_video, 16)
    expected = reference_frame_indices(200, 16)
    assert [index_code.read(decode_jpeg(frame)) for frame in row.frames] == expected
    assert row.times == pytest.approx([i / FPS for i in expected], abs=1e-6)
    assert row.n_frames == 200 and row.duration == pytest.approx(8.0) and row.fps == pytest.approx(FPS)
    small = read_long_video(long_video, 4, size_short=48)
    assert decode_jpeg(small.frames[0]).shape == (48, 64, 3)


def test_convert_replaces_each_rgb_frame_at_once(long_video, index_code):
    seen = []

    def convert(rgb):
        seen.append(rgb.shape)
        return b"jpeg"

    raw = write_video(long_video.with_name("raw.h264"), index_code.frames(40), fps=FPS)  # no timestamps
    for path in (long_video, raw):  # the seek plan and the sequential fallback
        seen.clear()
        video = read_frames(path, 5, convert=convert)
        assert video.frames == [b"jpeg"] * 5 and len(seen) == len(set(video.indices))
    assert read_frames(long_video, 2).frames[0].dtype == np.uint8  # no convert: RGB as before


def test_extracted_rows_carry_times_in_the_same_store(long_video, tmp_path):
    prefix, text = tmp_path / "img_long", tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    summary = extract_long_videos([long_video, text, long_video], 8, prefix, progress=False)
    assert summary["counts"] == {"ok": 1, "failed": 2, "skipped": 0}
    failed = (tmp_path / "img_long.failed.jsonl").read_text().splitlines()
    assert any("duplicate id" in json.loads(line)["reason"] for line in failed)
    store = VideoStore(f"{prefix}.tsv")
    row = store.row("walk")
    meta = parse_meta(row[1])
    assert len(store.frames("walk")) == 8 == len(meta["times"]) and frame_columns(row) == row[2:]
    assert meta["duration"] == pytest.approx(8.0)
    again = extract_long_videos([long_video], 8, prefix, progress=False)
    assert again["counts"]["skipped"] == 1 and len(VideoStore(f"{prefix}.tsv")) == 1
    with pytest.raises(ValueError, match="other settings"):
        extract_long_videos([long_video], 9, prefix, progress=False)


# --------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------


def test_merge_segments_joins_the_shortest_adjacent_pair_first():
    sentences = ["a b c d e f", "g", "h i", "j k l m n o p", "q"]
    spans = [[0, 10], [10, 12], [12, 20], [20, 40], [40, 41]]
    texts, merged = merge_segments(sentences, 3, spans)
    assert texts == ["a b c d e f", "g h i", "j k l m n o p q"]
    assert merged == [(0.0, 10.0), (10.0, 20.0), (20.0, 41.0)]
    assert merge_segments(["x", "y"], 4) == (["x", "y"], None)
    with pytest.raises(ValueError, match="timestamps"):
        merge_segments(["x", "y"], 4, [[0, 1]])


def test_whole_video_frames_spread_over_consecutive_clips():
    indices, clips = whole_video_indices(64, 4, 8, train=False)
    assert indices == sorted(indices) and indices[0] == 0 and indices[-1] == 63 and len(indices) == 32
    assert clips == [k for k in range(4) for _ in range(8)]
    train, _ = whole_video_indices(64, 4, 8, train=True, rng=random.Random(0))
    assert train == sorted(train) and train[-1] <= 63
    assert whole_video_indices(1, 2, 3, train=False)[0] == [0] * 6  # an image fills every slot


def test_span_frames_lie_within_their_span_or_are_the_nearest():
    times = [0.5 * i for i in range(20)]  # a frame every half second, 0 .. 9.5 s
    indices = span_indices(times, [(0.0, 2.0), (6.0, 6.2), (3.1, 3.3), (4.0, 4.0)], 4, train=False)
    assert indices[:4] == [0, 1, 2, 3]  # 4 frames inside [0, 2) s; the one at 2.0 s is the next span's
    assert indices[4:8] == [12] * 4  # one frame inside: repeated
    assert indices[8:12] == [6] * 4  # none inside: the nearest to the middle (3.2 s -> 3.0 s)
    assert indices[12:] == [8] * 4  # an instant: no frame inside, the nearest
    assert stored_times(3, 8.0) == [2.0, 4.0, 6.0]


# --------------------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------------------


class Record:
    def __init__(self, video, sentences, timestamps=None, duration=None):
        self.video, self.sentences, self.timestamps, self.duration = video, sentences, timestamps, duration


@pytest.fixture(scope="module")
def stores(tmp_path_factory, long_video):
    """The long video as a long-video row (times) and as a plain extractor row (no times)."""
    folder = tmp_path_factory.mktemp("stores")
    extract_long_videos([long_video], 40, folder / "long", progress=False)
    plain = VideoStore(folder / "long.tsv").frames("walk")
    with TSVWriter(folder / "plain") as writer:
        writer.write([b"walk", *plain])
    return VideoStore(folder / "long.tsv"), VideoStore(folder / "plain.tsv")


def shown(item, index_code) -> list[int]:
    return [index_code.read(frame.permute(1, 2, 0).numpy()) for frame in item["video"]]


def test_dataset_clips_follow_the_timestamps(stores, index_code):
    transform = ClipTransform(96, train=False, mode="img_center_crop", normalize=False, frame_hw=(96, 128))
    record = Record("walk", ["one.", "two.", "three."], [[1.0, 2.0], [5.0, 6.0], [6.0, 7.5]], duration=8.0)
    for store in stores:  # the row's own times, or the extractor's rule over the annotated duration
        item = MultiClipDataset(store, [record], 4, 2, transform, spans="timestamps")[0]
        frames = shown(item, index_code)
        assert item["video"].shape == (8, 3, 96, 128) and item["segments"] == ["one.", "two.", "three."]
        assert item["clip_index"].tolist() == [0, 0, 1, 1, 2, 2, -1, -1]  # 3 segments, 4 clips: one padded
        for k, (start, end) in enumerate(record.timestamps):
            assert all(start - 0.2 <= f / FPS <= end + 0.2 for f in frames[2 * k : 2 * k + 2])
        assert frames[6:] == frames[4:6]  # the padded clip repeats the last one
    video, clip_index = stack_multi_clips([item, item])
    assert video.shape == (2, 8, 3, 96, 128) and frame_mask(clip_index).sum() == 12


def test_dataset_whole_video_clips_and_merged_segments(stores, index_code):
    transform = ClipTransform(96, train=True, mode="img_rand_crop", normalize=False, frame_hw=(96, 128))
    record = Record("walk", ["a b", "c", "d e f", "g"])
    item = MultiClipDataset(stores[0], [record], 3, 4, transform)[0]
    assert item["clip_index"].tolist() == [k for k in range(3) for _ in range(4)]
    assert item["segments"] == ["a b c", "d e f", "g"]  # "a b" + "c" was the shortest pair
    frames = shown(item, index_code)
    assert frames == sorted(frames) and frames[-1] - frames[0] > 150  # spread over the whole 200 frames
    with pytest.raises(ValueError, match="timestamps"):
        MultiClipDataset(stores[0], [record], 3, 4, transform, spans="timestamps")[0]
    with pytest.raises(ValueError, match="duration"):  # a plain row and no duration: no frame times
        MultiClipDataset(stores[1], [Record("walk", ["x"], [[0, 1]])], 1, 2, transform, spans="timestamps")[0]


# --------------------------------------------------------------------------------------------------------
# Non-square clips (LF-VILA: 192 x 320)
# --------------------------------------------------------------------------------------------------------


def test_non_square_clips_cut_the_largest_window_of_the_target_aspect():
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[:, :, 0] = np.arange(240, dtype=np.uint8)[:, None]  # red = row
    center = ClipTransform(192, train=False, mode="img_center_crop", normalize=False, frame_hw=(192, 320))
    out = center([frame])
    assert out.shape == (1, 3, 192, 320)
    assert out[0, 0, 0, 0] == 24 and out[0, 0, -1, 0] == 215  # rows 24 .. 215: the centred 192 x 320 window
    rand = ClipTransform(192, train=True, mode="img_rand_crop", normalize=False, frame_hw=(192, 320))
    tops = {int(rand([frame], random.Random(seed))[0, 0, 0, 0]) for seed in range(30)}
    assert min(tops) >= 0 and max(tops) <= 48 and len(tops) > 5
    padded = ClipTransform(192, train=False, mode="pad_resize", normalize=False, frame_hw=(96, 320))([frame])
    assert padded.shape == (1, 3, 96, 320) and padded[0, :, :, :40].sum() == 0  # 320x240 padded to 800x240
    assert ClipTransform(224, train=False, frame_hw=(192, 320))([frame]).dtype == torch.float32
    with pytest.raises(ValueError, match="frame_hw"):
        ClipTransform(224, train=True, normalize=False, defer_resize=True, frame_hw=(192, 320))
    assert "frame_hw=(192, 320)" in repr(center)


# --------------------------------------------------------------------------------------------------------
# Long-form QA and classification annotations, read as they ship; bad rows named
# --------------------------------------------------------------------------------------------------------


def test_how2qa_rows_and_coin_database_are_read_as_they_are_and_bad_rows_named(tmp_path):
    from lib.data.annotations import AnnotationError, class_words, load_annotations

    row = {"vid_name": "v1", "q": "what next?", "a0": "x", "a1": "y", "answer_idx": 1, "ts": "1.0-9.5",
           "sub": [{"text": "hello"}, "there"]}  # fmt: skip
    ours = {"video": "v2", "question": "q?", "option_0": "a", "option_1": "b", "answer": 0}
    path = tmp_path / "txt_qa.json"
    path.write_text(json.dumps({"train": [row, ours]}))
    items = load_annotations(path, "long_qa")["train"]
    assert (items[0].video, items[0].options, items[0].answer, items[0].subtitle) == (
        "v1",
        ("x", "y"),
        1,
        "hello there",
    )
    assert items[1].subtitle == ""
    path.write_text(json.dumps({"train": [ours, {**row, "answer_idx": 5}]}))
    with pytest.raises(AnnotationError, match=r"txt_qa.json.*train.*1.*answer"):
        load_annotations(path, "long_qa")
    coin = {
        "database": {
            "a": {"class": "MakeFrenchFries", "subset": "training"},
            "b": {"class": "ArcWeld", "subset": "testing"},
        }
    }
    (tmp_path / "COIN.json").write_text(json.dumps(coin))
    found = load_annotations(tmp_path / "COIN.json", "classification")
    assert [(r.video, r.label) for r in found["train"]] == [("a", "make french fries")]
    assert found["test"][0].label == "arc weld" == class_words("ArcWeld")
    coin["database"]["c"] = {"class": "X", "subset": "unknown"}
    (tmp_path / "COIN.json").write_text(json.dumps(coin))
    with pytest.raises(AnnotationError, match=r"COIN.json.*\bc\b.*subset"):
        load_annotations(tmp_path / "COIN.json", "classification")
