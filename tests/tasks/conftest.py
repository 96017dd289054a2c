"""A small real demo dataset (videos → extractor → TSV + every annotation format) and tiny-model args."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.demo.synthetic import make_demo_dataset


@pytest.fixture(scope="module")
def built(demo_data, minilm_dir):
    """A tiny multi-task checkpoint folder saved through the engine's hook (see api_checkpoint.py)."""
    from api_checkpoint import build_checkpoint

    return build_checkpoint(demo_data, minilm_dir)


@pytest.fixture(scope="module")
def api(built):
    """The tiny checkpoint loaded with the Python API."""
    from lib.api import Lavender

    return Lavender.from_pretrained(built.folder, device="cpu")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, seed=0, n_train=24, n_val=6, n_test=8, frame_size=64, sample=4, progress=False)
    return out


@pytest.fixture
def tiny_args(demo_data, minilm_dir, tmp_path) -> list[str]:
    """Command-line args for a tiny model on the demo data: custom small Swin, 2 MiniLM fusion layers, CPU."""
    return [
        "--data_dir", str(demo_data),
        "--dataset", "demo",
        "--txt_backbone", str(minilm_dir),
        "--fusion_encoder", str(minilm_dir),
        "--fusion_layers", "2",
        "--vis_backbone_size", "custom",
        "--vis_embed_dim", "16",
        "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 4, 8]",
        "--vis_backbone_init", "random",
        "--kinetics", "-1",
        "--size_img", "64",
        "--size_frame", "4",
        "--size_txt", "16",
        "--size_batch", "4",
        "--size_epoch", "1",
        "--n_workers", "0",
        "--lr", "1e-4",
        "--logging_steps", "1",
        "--tensorboard", "false",
        "--save_model_every_epoch", "false",
        "--path_output", str(tmp_path / "out"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- long-form (LF-VILA)

LONG_COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
LONG_ORDERS = [  # each video: 4 consecutive segments, one colour each (its own event)
    ("red", "green", "blue", "yellow"), ("yellow", "blue", "green", "red"),
    ("green", "red", "yellow", "blue"), ("blue", "yellow", "red", "green"),
    ("red", "blue", "yellow", "green"), ("green", "yellow", "blue", "red"),
]  # fmt: skip
LONG_SPLITS = {"train": [0, 1, 2, 3], "val": [4], "test": [4, 5]}


@pytest.fixture(scope="session")
def long_data(tmp_path_factory) -> Path:
    """Six real 4-segment h264 videos (2 s each), their long-video rows (16 frames with times) in
    ``img_long.tsv``, and the annotations of the three long-form tasks as their public releases lay them:
    ActivityNet Captions' folder ``long-para/`` (train.json, val_1.json, val_2.json), How2QA-style rows with
    subtitles (``txt_long-qa.json``) and COIN's ``long-cls.json`` ({"database": ...})."""
    import numpy as np

    from lib.data.long_video import extract_long_videos
    from lib.data.video_write import write_video

    out = tmp_path_factory.mktemp("long")
    videos = out / "videos"
    videos.mkdir()
    for i, order in enumerate(LONG_ORDERS):
        frames = [np.full((48, 64, 3), LONG_COLORS[c], np.uint8) for c in order for _ in range(12)]
        write_video(videos / f"long_{i}.mp4", frames, fps=24)
    extract_long_videos(videos, 16, out / "img_long", progress=False)

    def paragraph(i: int) -> dict:
        sentences = [f"the screen turns {c}." for c in LONG_ORDERS[i]]
        return {
            "duration": 2.0,
            "timestamps": [[k * 0.5, k * 0.5 + 0.5] for k in range(4)],
            "sentences": sentences,
        }

    anet = out / "long-para"
    anet.mkdir()
    for split, name in (("train", "train.json"), ("val", "val_1.json"), ("test", "val_2.json")):
        (anet / name).write_text(json.dumps({f"long_{i}": paragraph(i) for i in LONG_SPLITS[split]}))

    def question(i: int) -> dict:
        order = LONG_ORDERS[i]
        subtitle = [{"text": "now watch"}, {"text": "closely"}]
        return {"vid_name": f"long_{i}", "q": f"what colour comes after {order[0]}?", "a0": order[1],
                "a1": order[2], "a2": order[3], "answer_idx": 0, "sub": subtitle}  # fmt: skip

    qa = {split: [question(i) for i in ids] for split, ids in LONG_SPLITS.items()}
    (out / "txt_long-qa.json").write_text(json.dumps(qa))
    subsets = {0: "training", 1: "training", 2: "training", 3: "training", 4: "testing", 5: "testing"}
    coin = {f"long_{i}": {"class": f"{LONG_ORDERS[i][0].title()}Opening", "subset": s, "recipe_type": 0}
            for i, s in subsets.items()}  # fmt: skip
    (out / "long-cls.json").write_text(json.dumps({"database": coin}))
    return out


@pytest.fixture
def long_args(long_data, minilm_dir, tmp_path) -> list[str]:
    """A tiny HTWA model on ``long_data``: 2 clips x 4 frames of 32 px, a random 2-layer 32-wide fusion
    encoder (MiniLM's vocabulary and tokenizer), CPU."""
    return [
        "--data_dir", str(long_data), "--dataset", "long",
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "2",
        "--fusion_encoder_rand_init", "true", "--fusion_hidden_size", "32", "--fusion_heads", "2",
        "--fusion_intermediate_size", "64",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "16", "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 2, 4]", "--vis_window", "[8, 4, 4]", "--vis_temporal_windows", "[2, 4, 8, 8]",
        "--vis_local_window", "4", "--vis_backbone_init", "random", "--kinetics", "-1",
        "--vis_drop_path", "0",
        "--size_img", "32", "--max_size_patch", "2", "--long_clips", "2", "--long_frames_per_clip", "4",
        "--size_frame", "8", "--max_size_frame", "8", "--contrastive_dim", "16", "--long_form_dim", "16",
        "--max_sentences", "4", "--long_size_sentence", "8", "--size_txt", "24", "--size_batch", "4",
        "--size_epoch", "1", "--steps_per_epoch", "2", "--n_workers", "0", "--lr", "1e-4",
        "--logging_steps", "1", "--tensorboard", "false", "--save_model_every_epoch", "false",
        "--precision", "fp32", "--path_output", str(tmp_path / "out"),
        "--freeze_params", '["enc_txt.emb_txt.word_embeddings", "fc_mtm.predictions.decoder.weight"]',
    ]  # fmt: skip
