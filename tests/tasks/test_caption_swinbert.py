"""LAVENDER's captioning data is SwinBERT's: main_caption.py reads train_yaml / val_yaml / test_yaml as they
are (issue #28, item 4). The files are made here in that layout from the demo's real frames and captions:
a YAML per split naming the frame TSV (``key \\t meta \\t frame…``), the caption TSV (``key \\t
[{"caption": …}]``), the linelist of training pairs and the COCO-format references."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lib.data.annotations import AnnotationError
from lib.data.swinbert import SwinbertDataError
from lib.data.tsv import TSVFile, TSVWriter, frame_columns
from lib.engine.config import load_config
from lib.tasks.caption import CaptionTask
from lib.tasks.common import clip_transform
from lib.tasks.run import run

YAMLS = ["--train_yaml", "MSRVTT-v2/train_32frames.yaml", "--val_yaml", "MSRVTT-v2/val_32frames.yaml",
         "--test_yaml", "MSRVTT-v2/test_32frames.yaml"]  # fmt: skip


def captions_by_video(items: list[dict]) -> dict[str, list[str]]:
    videos: dict[str, list[str]] = {}
    for item in items:
        videos.setdefault(item["video"], []).append(item["caption"])
    return videos


def write_split(root: Path, split: str, videos: dict[str, list[str]], frames: dict[str, list[bytes]]) -> None:
    with TSVWriter(root / "frame_tsv" / f"{split}_32frames.img") as writer:
        for video in videos:
            writer.write([video, json.dumps({"num_frames": len(frames[video])}), *frames[video]])
    with TSVWriter(root / f"{split}.caption") as writer:
        for video, captions in videos.items():
            writer.write([video, json.dumps([{"caption": c} for c in captions])])
    spec = [
        f"img: frame_tsv/{split}_32frames.img.tsv",
        f"label: {split}.label.tsv",
        f"caption: {split}.caption.tsv",
    ]
    if split == "train":
        pairs = [f"{i}\t{j}\n" for i, captions in enumerate(videos.values()) for j in range(len(captions))]
        (root / "train.caption.linelist.tsv").write_text("".join(pairs))
        spec.append("caption_linelist: train.caption.linelist.tsv")
    else:  # val names its references; test's are found under SwinBERT's default name
        coco = {
            "images": [{"id": v} for v in videos],
            "annotations": [{"image_id": v, "caption": c, "id": k} for k, (v, c) in
                            enumerate((v, c) for v, cs in videos.items() for c in cs)],
        }  # fmt: skip
        name = "val.caption_coco_format.json" if split == "val" else "test_32frames_caption_coco_format.json"
        (root / name).write_text(json.dumps(coco))
        if split == "val":
            spec.append(f"caption_coco_format: {name}")
    (root / f"{split}_32frames.yaml").write_text("\n".join(spec) + "\n")


@pytest.fixture(scope="module")
def swinbert_data(demo_data, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("swinbert")
    root = out / "MSRVTT-v2"
    with TSVFile(demo_data / "img_demo.tsv") as table:
        frames = {table.key(i): frame_columns(table.row(i)) for i in range(len(table))}
    annotations = json.loads((demo_data / "txt_demo-captioning.json").read_text())
    splits = {split: captions_by_video(annotations[split]) for split in ("train", "val", "test")}
    for split, videos in splits.items():
        write_split(root, split, videos, frames)
    return out, splits


def config(tiny_args, data: Path, *extra: str):
    return load_config(
        [*tiny_args, "--type", "captioning", "--task", "msrvtt-cap", "--data_dir", str(data), *YAMLS, *extra]
    )


def test_the_swinbert_layout_is_read_as_it_is(tiny_args, tokenizer, swinbert_data):
    data, splits = swinbert_data
    task = CaptionTask(config(tiny_args, data), tokenizer)
    train = [(r.video, r.text) for r in task.ann["train"]]
    assert train == [
        (v, c) for v, captions in splits["train"].items() for c in captions
    ]  # the linelist's pairs
    for split in ("val", "test"):
        assert task.references(split) == splits[split]
    assert [p.name for p in task.store.paths] == [f"{s}_32frames.img.tsv" for s in ("train", "val", "test")]
    clip = task.store.clip(train[0][0], 4, clip_transform(task.cfg, train=False))
    assert clip.shape == (4, 3, 64, 64)  # the frames after the meta column
    assert task.eval_splits() == ["val", "test"]


def test_main_caption_evaluates_on_swinbert_files(tiny_args, swinbert_data):
    """The run's code path (size_epoch 0: evaluation only, to be fast) scores val and test from the YAMLs."""
    data, splits = swinbert_data
    argv = [*tiny_args, "--task", "msrvtt-cap", "--data_dir", str(data), *YAMLS, "--size_epoch", "0",
            "--caption_eval_backend", "python", "--max_gen_length", "3", "--size_batch", "8"]  # fmt: skip
    final = run("captioning", argv)
    assert final["msrvtt-cap/test/n_videos"] == len(splits["test"]) and "msrvtt-cap/test/CIDEr" in final
    out = Path(tiny_args[tiny_args.index("--path_output") + 1])
    predictions = json.loads((out / "captions_test.json").read_text())
    assert [p["video"] for p in predictions] == list(splits["test"])


def test_missing_frames_and_composite_splits_are_errors_naming_the_files(
    tiny_args, tokenizer, swinbert_data, tmp_path
):
    data, _ = swinbert_data
    root = tmp_path / "MSRVTT-v2"
    shutil.copytree(data / "MSRVTT-v2", root)
    captions = root / "train.caption.tsv"
    with TSVWriter(captions, resume=True) as writer:  # one more caption row, and a training pair for it
        writer.write(["no_such_video", json.dumps([{"caption": "a lost caption"}])])
        n = len(writer)
    with open(root / "train.caption.linelist.tsv", "a") as f:
        f.write(f"{n - 1}\t0\n")
    with pytest.raises(
        AnnotationError, match=rf"{captions}: split 'train': video 'no_such_video' has no row"
    ):
        CaptionTask(config(tiny_args, tmp_path), tokenizer)
    task = CaptionTask(config(tiny_args, tmp_path, "--on_bad_item", "skip"), tokenizer)
    assert task.ann.skipped == {"train": 1} and "no_such_video" not in {r.video for r in task.ann["train"]}
    (root / "val_32frames.yaml").write_text("img: frame_tsv/val_32frames.img.tsv\ncomposite: true\n")
    with pytest.raises(SwinbertDataError, match=r"val_32frames\.yaml: 'composite: true'"):
        CaptionTask(config(tiny_args, tmp_path), tokenizer)
