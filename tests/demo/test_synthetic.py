"""The synthetic demo data: deterministic, disjoint splits, single-wordpiece answers, really encoded."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from dataclasses import fields
from pathlib import Path

import av
import numpy as np
import pytest

from lib.data.annotations import load_annotations
from lib.demo.synthetic import (
    ANNOTATION_FILES,
    ANSWERS,
    ATTRIBUTES,
    MC_TEST_ITEMS,
    MC_TRAIN_ITEMS,
    QUESTION_TYPES,
    RECIPE,
    Scene,
    all_scenes,
    demo_annotations,
    frame_tsv_is_complete,
    make_demo_dataset,
    render_frames,
    sample_specs,
    video_is_complete,
    write_demo_videos,
    write_spec_video,
)

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "_tools" / "make_demo_data.py"
SCENE_OF_CAPTION = {scene.caption(): scene for scene in all_scenes()}


@pytest.fixture(scope="module")
def specs():
    return sample_specs(seed=0, n_train=80, n_val=20, n_test=60)


@pytest.fixture(scope="module")
def annotations(specs):
    return demo_annotations(specs, seed=0)


def decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def attributes_differing(a: Scene, b: Scene) -> list[str]:
    return [f.name for f in fields(Scene) if getattr(a, f.name) != getattr(b, f.name)]


# ---------------------------------------------------------------------------------------- determinism


def test_same_seed_same_data_other_seed_other_data(specs, annotations, tmp_path):
    again = sample_specs(seed=0, n_train=80, n_val=20, n_test=60)
    assert again == specs
    assert demo_annotations(again, seed=0) == annotations
    other = sample_specs(seed=1, n_train=80, n_val=20, n_test=60)
    assert [s.scene for s in other] != [s.scene for s in specs]
    assert demo_annotations(other, seed=1) != annotations

    spec = specs[-1]
    first = decode(write_spec_video(spec, tmp_path / "a.mp4"))
    second = decode(write_spec_video(sample_specs(0, 80, 20, 60)[-1], tmp_path / "b.mp4"))
    assert np.array_equal(first, second)
    other_frames = decode(write_spec_video(other[-1], tmp_path / "c.mp4"))
    assert first.shape != other_frames.shape or not np.array_equal(first, other_frames)


def test_growing_one_split_keeps_the_others(specs):
    bigger = sample_specs(seed=0, n_train=200, n_val=20, n_test=60)
    assert [s for s in bigger if s.split != "train"] == [s for s in specs if s.split != "train"]
    assert [s for s in bigger if s.split == "train"][:80] == [s for s in specs if s.split == "train"]


# --------------------------------------------------------------------------------------------- splits


def test_no_video_in_two_splits(specs, annotations):
    split_of = {s.video: s.split for s in specs}
    assert len(split_of) == len(specs) == 160
    assert Counter(split_of.values()) == {"train": 80, "val": 20, "test": 60}
    for name, content in annotations.items():
        for split, items in content.items():
            if split in ("vocab", "ans2label"):
                continue
            videos = items if isinstance(items, dict) else [item["video"] for item in items]
            assert {split_of[v] for v in videos} == {split}, (name, split)


def test_files_load_with_the_real_readers(specs, annotations, tmp_path):
    ids = {s.video for s in specs}
    for name, kind in ANNOTATION_FILES.items():
        (tmp_path / name).write_text(json.dumps(annotations[name]))
        ann = load_annotations(
            tmp_path / name, kind, video_ids=ids, n_options=5 if kind == "qa_choice" else None
        )
        expected = ["train", "val"] if kind == "pretrain" else ["train", "val", "test"]
        assert list(ann.splits) == expected
        assert all(len(ann[split]) > 0 for split in expected)
    retrieval = annotations["txt_demo-retrieval.json"]
    assert len(retrieval["train"]) == 4 * 80  # four phrasings per train video
    assert len(retrieval["test"]) == 60  # one canonical caption per test video
    pretrain = annotations["txt_demo-pretrain.json"]
    assert all(len(set(captions)) == 4 for captions in pretrain["train"].values())


def test_test_captions_identify_their_video(specs, annotations):
    test = annotations["txt_demo-retrieval.json"]["test"]
    videos_per_caption = Counter(item["caption"] for item in test)
    assert len(videos_per_caption) == len(test) == 60
    assert set(videos_per_caption.values()) == {1}
    val = {item["caption"] for item in annotations["txt_demo-captioning.json"]["val"]}
    assert not val & set(videos_per_caption)  # val and test combinations are disjoint too
    for item in test:
        spec = next(s for s in specs if s.video == item["video"])
        assert SCENE_OF_CAPTION[item["caption"]] == spec.scene


def test_held_out_splits_are_balanced(specs):
    test = [s.scene for s in specs if s.split == "test"]
    for name, values in ATTRIBUTES.items():
        counts = Counter(getattr(scene, name) for scene in test)
        assert set(counts) == set(values), name
        assert max(counts.values()) <= len(test) / len(values) + 3, (name, counts)


def test_split_sizes_are_checked():
    with pytest.raises(ValueError, match="n_val \\+ n_test <= 480"):
        sample_specs(0, 10, 400, 400)
    with pytest.raises(ValueError, match="even and >= 32"):
        sample_specs(0, 10, 2, 2, frame_size=63)


# --------------------------------------------------------------------------------- words and questions


def test_every_word_is_one_wordpiece(tokenizer, specs):
    for answer in ANSWERS:
        assert tokenizer.tokenize(answer) == [answer]
    for digit in "01234":
        assert tokenizer.tokenize(digit) == [digit]
    captions = {c for s in all_scenes() for c in s.phrasings()}
    words = {w for c in captions for w in c.split()}
    assert [w for w in sorted(words) if tokenizer.tokenize(w) != [w]] == []
    canonical_words = {w for s in all_scenes() for w in s.caption().split()}
    assert len(canonical_words) <= 30  # a small, fixed captioning vocabulary


def test_open_qa_answers_and_types(tokenizer, annotations):
    qa = annotations["txt_demo-qa.json"]
    assert qa["vocab"] == list(ANSWERS)
    assert qa["ans2label"] == {a: i for i, a in enumerate(ANSWERS)}
    for split in ("train", "val", "test"):
        for item in qa[split]:
            assert qa["vocab"][item["answer"]] == item["answer_text"]
            assert len(tokenizer(item["answer_text"], add_special_tokens=False)["input_ids"]) == 1
            assert item["question"].endswith("?")
    test_types = Counter(item["type"] for item in qa["test"])
    assert set(test_types) == set(QUESTION_TYPES)
    assert set(test_types.values()) == {60}


def test_answers_match_the_scene(specs, annotations):
    scene_of = {s.video: s.scene for s in specs}
    for item in annotations["txt_demo-qa.json"]["test"]:
        scene = scene_of[item["video"]]
        assert item["answer_text"] == scene.answer(item["type"])
        if item["type"] == "color":
            assert scene.color not in item["question"]  # the question does not give the answer away
    counts = [i["answer_text"] for i in annotations["txt_demo-qa.json"]["test"] if i["type"] == "count"]
    assert set(counts) == {"one", "two"}


@pytest.mark.parametrize("name", ["txt_demo-mc.json", "txt_demo-retmc.json"])
def test_multiple_choice_has_exactly_one_correct_option(specs, annotations, name):
    scene_of = {s.video: s.scene for s in specs}
    positions, n_changed = Counter(), Counter()
    for split in ("train", "val", "test"):
        for item in annotations[name][split]:
            options = [item[f"option_{k}"] for k in range(5)]
            assert len(set(options)) == 5
            truth = scene_of[item["video"]]
            correct = [k for k, o in enumerate(options) if SCENE_OF_CAPTION[o] == truth]
            assert correct == [item["answer"]]
            changed = [
                attributes_differing(truth, SCENE_OF_CAPTION[o]) for o in options if o != options[correct[0]]
            ]
            assert all(len(c) >= 1 for c in changed)  # distractors: captions of other scenes
            n_changed.update(len(c) for c in changed)
            assert (item["question"] == "") == (name == "txt_demo-retmc.json")
            positions[item["answer"]] += 1
    assert set(positions) == {0, 1, 2, 3, 4}
    assert len(n_changed) >= 4  # random other scenes: some differ in one attribute, others in several


def test_multiple_choice_items_per_video(specs, annotations):
    """Train videos get MC_TRAIN_ITEMS one-sequence questions each (distinct option lists, so the same clip
    is seen with its answer at several positions); test videos MC_TEST_ITEMS of both kinds (distinct option
    lists, so the test accuracy does not hang on one draw of distractors); val videos one of each."""
    mc, retmc = annotations["txt_demo-mc.json"], annotations["txt_demo-retmc.json"]
    assert MC_TRAIN_ITEMS > 1 and MC_TEST_ITEMS > 1
    expected = {
        "txt_demo-mc.json": {"train": MC_TRAIN_ITEMS, "val": 1, "test": MC_TEST_ITEMS},
        "txt_demo-retmc.json": {"train": 1, "val": 1, "test": MC_TEST_ITEMS},
    }
    for name, content in (("txt_demo-mc.json", mc), ("txt_demo-retmc.json", retmc)):
        for split, n in expected[name].items():
            videos = [s.video for s in specs if s.split == split]
            assert Counter(item["video"] for item in content[split]) == Counter(videos * n), (name, split)
            lists: dict[str, set] = {}
            for item in content[split]:
                lists.setdefault(item["video"], set()).add(tuple(item[f"option_{k}"] for k in range(5)))
            assert all(len(distinct) == n for distinct in lists.values()), (name, split)


# ---------------------------------------------------------------------------------------- real videos


def test_videos_decode_and_show_their_scene(specs, tmp_path):
    chosen = [s for s in specs if s.split == "test"][:8]
    paths, n_encoded = write_demo_videos(chosen, tmp_path / "videos", progress=False)
    assert n_encoded == 8
    for spec, path in zip(chosen, paths):
        frames = decode(path)
        assert frames.shape == (spec.n_frames, 64, 64, 3)
        assert 10 <= spec.n_frames <= 40
        # the object's colour is at its centre in the first and last decoded frame (after H.264)
        for t in (0, spec.n_frames - 1):
            for x, y in np.asarray(spec.centres) + t * np.asarray(spec.step):
                pixel = frames[t, int(round(y)), int(round(x))].astype(int)
                assert np.abs(pixel - np.array(spec.rgb)).max() < 45, (spec.video, t, pixel, spec.rgb)
        dx, dy = np.sign(spec.step)
        expected = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
        assert (dx, dy) == expected[spec.scene.direction]


def test_existing_videos_are_reused_and_damaged_ones_rebuilt(specs, tmp_path):
    chosen = [s for s in specs if s.split == "val"][:4]
    paths, _ = write_demo_videos(chosen, tmp_path, progress=False)
    assert write_demo_videos(chosen, tmp_path, progress=False)[1] == 0
    paths[1].write_bytes(paths[1].read_bytes()[:200])  # truncated
    assert not video_is_complete(paths[1], chosen[1])
    assert write_demo_videos(chosen, tmp_path, progress=False)[1] == 1
    assert video_is_complete(paths[1], chosen[1])
    assert write_demo_videos(chosen, tmp_path, force=True, workers=2, progress=False)[1] == 4


def test_other_split_sizes_re_encode_the_videos_whose_scene_changed(tmp_path):
    """Val/test scenes are drawn without replacement, so ``demo_val_00003`` of a 6-video val split is another
    scene than of a 3-video one: a rebuild with other split sizes must not reuse its file (it once did, and
    a third of the demo's val videos showed other scenes than their annotations)."""
    first = make_demo_dataset(tmp_path, seed=0, n_train=2, n_val=6, n_test=2, progress=False, extract=False)
    again = make_demo_dataset(tmp_path, seed=0, n_train=2, n_val=3, n_test=2, progress=False, extract=False)
    before = {s.video: s for s in first.specs}
    changed = [s for s in again.specs if before[s.video] != s]
    assert changed and all(s.split == "val" for s in changed)
    assert again.n_encoded == len(changed)
    for spec in changed:  # the file now shows the new scene's colour at its centre
        frame = decode(tmp_path / "videos" / f"{spec.video}.mp4")[0]
        x, y = np.asarray(spec.centres[0]).round().astype(int)
        assert np.abs(frame[y, x].astype(int) - np.array(spec.rgb)).max() < 45, spec.video
    same = make_demo_dataset(tmp_path, seed=0, n_train=2, n_val=3, n_test=2, progress=False, extract=False)
    assert same.n_encoded == 0


def test_frame_size_is_configurable(tmp_path):
    spec = sample_specs(seed=3, n_train=0, n_val=0, n_test=3, frame_size=96)[2]
    assert spec.scene.count >= 1
    frames = render_frames(spec)
    assert frames.shape == (spec.n_frames, 96, 96, 3)
    assert decode(write_spec_video(spec, tmp_path / "v.mp4")).shape == frames.shape


def test_frame_table_completeness(tmp_path):
    from lib.data.tsv import TSVWriter
    from lib.data.video import encode_jpeg

    spec = sample_specs(seed=0, n_train=0, n_val=0, n_test=1)[0]
    frames = [encode_jpeg(frame) for frame in render_frames(spec)[:5]]
    with TSVWriter(tmp_path / "img_demo") as writer:
        for video in ("a", "b", "c"):
            writer.write([video, *frames])
    tsv = tmp_path / "img_demo.tsv"
    assert frame_tsv_is_complete(tsv, ["a", "b", "c"], sample=5)
    assert not frame_tsv_is_complete(tsv, ["a", "b", "c"], sample=4)
    assert not frame_tsv_is_complete(tsv, ["a", "b", "c", "d"], sample=5)
    assert not frame_tsv_is_complete(tsv, ["b", "a", "c"], sample=5)
    tsv.with_suffix(".lineidx").unlink()
    assert not frame_tsv_is_complete(tsv, ["a", "b", "c"], sample=5)


# ----------------------------------------------------------------------------------------------- tool


def run_tool(output: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        "--output",
        str(output),
        "--seed",
        "0",
        "--n_train",
        "12",
        "--n_val",
        "4",
        "--n_test",
        "6",
        "--quiet",
    ]
    result = subprocess.run(
        [sys.executable, str(TOOL), *args, *extra], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result


def test_tool_writes_videos_and_annotations(tmp_path):
    result = run_tool(tmp_path / "demo", "--no_extract")
    assert "videos: 22" in result.stdout and "(22 encoded now)" in result.stdout
    names = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert names == sorted([*ANNOTATION_FILES, "meta_demo.json", "videos"])
    assert len(list((tmp_path / "demo" / "videos").glob("*.mp4"))) == 22
    meta = json.loads((tmp_path / "demo" / "meta_demo.json").read_text())
    assert meta["params"] == {"recipe": RECIPE, "seed": 0, "frame_size": 64, "fps": 10}
    assert "(0 encoded now)" in run_tool(tmp_path / "demo", "--no_extract").stdout
    changed = run_tool(tmp_path / "demo", "--no_extract", "--size", "48")  # other parameters: rebuilt
    assert "(22 encoded now)" in changed.stdout


def test_tool_end_to_end_with_frame_table(tmp_path):
    from lib.data.frames import decode_jpeg
    from lib.data.tsv import TSVFile, frame_columns

    output = tmp_path / "demo"
    result = run_tool(output)
    assert "extracted now" in result.stdout
    table = TSVFile(str(output / "img_demo.tsv"))
    videos = sorted(p.stem for p in (output / "videos").glob("*.mp4"))
    assert sorted(table.keys()) == videos and len(videos) == 22
    frames = frame_columns(table.row(0))
    assert len(frames) == 5
    assert decode_jpeg(frames[0]).shape == (64, 64, 3)
    stamp = (output / "img_demo.tsv").stat().st_mtime_ns
    again = run_tool(output)
    assert "already complete" in again.stdout and "(0 encoded now)" in again.stdout
    assert (output / "img_demo.tsv").stat().st_mtime_ns == stamp

    (output / "img_demo.lineidx").unlink()  # a damaged table is rebuilt from scratch
    demo = make_demo_dataset(output, n_train=12, n_val=4, n_test=6, progress=False)
    assert (demo.n_encoded, demo.extracted) == (0, True)
    assert frame_tsv_is_complete(demo.tsv, [p.stem for p in demo.video_paths], sample=5)
    assert not list(output.glob("*.inprogress"))
