"""Long-form test data (LF-VILA, issue #27): real 4-segment videos, their long-video rows and the three
long-form tasks' annotations as the public releases lay them (the ``long_data`` fixture of conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lib.data.long_video import extract_long_videos
from lib.data.video_write import write_video

LONG_COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20)}
LONG_ORDERS = [  # each video: 4 consecutive segments, one colour each (its own event)
    ("red", "green", "blue", "yellow"), ("yellow", "blue", "green", "red"),
    ("green", "red", "yellow", "blue"), ("blue", "yellow", "red", "green"),
    ("red", "blue", "yellow", "green"), ("green", "yellow", "blue", "red"),
]  # fmt: skip
LONG_SPLITS = {"train": [0, 1, 2, 3], "val": [4], "test": [4, 5]}


def make_long_data(out: Path) -> Path:
    """Six real 4-segment h264 videos (2 s each), their long-video rows (16 frames with times) in
    ``img_long.tsv``, and the annotations of the three long-form tasks as their public releases lay them:
    ActivityNet Captions' folder ``long-para/`` (train.json, val_1.json, val_2.json), How2QA-style rows with
    subtitles (``txt_long-qa.json``) and COIN's ``long-cls.json`` ({"database": ...})."""
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
