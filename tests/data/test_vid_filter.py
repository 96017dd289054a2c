"""The multi-task test-leak filter: val/test videos of a family leave every train split of that family."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib.data.annotations import AnnotationError, annotation_families, filter_test_leaks, load_annotations

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "_tools" / "multi_task_vid_filter.py"


def option_item(video: str, question: str = "what happens?") -> dict:
    return {"question": question, **{f"option_{k}": f"o{k}" for k in range(5)}, "answer": 0, "video": video}


# v1 is a val video (retrieval), v2 a test video (mc), v3 a val video of the pretraining-style file;
# v4/v5 are train-only. Train splits of every format contain leaks.
FAMILY = {
    "txt_fam-retrieval.json": {
        "train": [{"video": v, "caption": f"about {v}"} for v in ("v1", "v4", "v1", "v5", "v2")],
        "val": [{"video": "v1", "caption": "about v1"}],
        "test": [{"video": "v6", "caption": ["two", "sentences"]}],
    },
    "txt_fam-qa.json": {
        "train": [{"video": v, "question": "q?", "answer": 0, "answer_text": "a", "type": "what"}
                  for v in ("v3", "v4", "v6")],
        "test": [{"video": "v5x", "question": "q?", "answer": 1, "answer_text": "b"}],
        "vocab": ["a", "b"],
        "ans2label": {"a": 0, "b": 1},
    },
    "txt_fam-mc.json": {
        "train": [option_item(v) for v in ("v2", "v4")],
        "test": [option_item("v2"), option_item("v7", question="")],
    },
    "txt_fam-pretrain.json": {
        "train": {"v1": ["c1"], "v4": ["c4"], "v7": ["c7", "c7b"], "v8": ["c8"]},
        "val": {"v3": ["c3"]},
    },
}  # fmt: skip
OTHER = {"txt_other-retrieval.json": {"train": [{"video": "v1", "caption": "x"}], "val": []}}
EXPECTED_REMOVED = {  # file: (train items before, items removed, removed video ids)
    "txt_fam-retrieval.json": (5, 3, ["v1", "v2"]),
    "txt_fam-qa.json": (3, 2, ["v3", "v6"]),
    "txt_fam-mc.json": (2, 1, ["v2"]),
    "txt_fam-pretrain.json": (4, 2, ["v1", "v7"]),
}


@pytest.fixture
def data_dir(tmp_path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    for name, content in {**FAMILY, **OTHER}.items():
        (directory / name).write_text(json.dumps(content, indent=1))
    return directory


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)


def test_filter_removes_leaks_from_every_format(data_dir, tmp_path):
    originals = {p.name: p.read_bytes() for p in data_dir.iterdir()}
    out = tmp_path / "out"
    report = filter_test_leaks(data_dir, "fam", out)

    assert report.n_eval_ids == 6  # v1 v6 v5x v2 v7 v3
    assert report.n_removed == 8
    by_name = {Path(f.file).name: f for f in report.files}
    assert {n: (f.train_before, f.train_after, f.removed_ids) for n, f in by_name.items()} == {
        n: (before, before - n_removed, ids) for n, (before, n_removed, ids) in EXPECTED_REMOVED.items()
    }
    assert sorted(p.name for p in out.iterdir()) == sorted(FAMILY)  # the other family is not written

    eval_ids = {"v1", "v2", "v3", "v5x", "v6", "v7"}
    for name, original in FAMILY.items():
        filtered = json.loads((out / name).read_text())
        train_videos = list(filtered["train"]) if isinstance(filtered["train"], dict) else [
            item["video"] for item in filtered["train"]
        ]  # fmt: skip
        assert not eval_ids & set(train_videos), name
        assert {k: v for k, v in filtered.items() if k != "train"} == {
            k: v for k, v in original.items() if k != "train"
        }  # val/test/vocab untouched
    assert json.loads((out / "txt_fam-pretrain.json").read_text())["train"] == {"v4": ["c4"], "v8": ["c8"]}
    kept = load_annotations(out / "txt_fam-retrieval.json", "retrieval")["train"]
    assert [(item.video, item.text) for item in kept] == [("v4", "about v4"), ("v5", "about v5")]
    assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == originals


def test_filter_refuses_in_place_and_bad_files(data_dir, tmp_path):
    with pytest.raises(ValueError, match="never edits files in place"):
        filter_test_leaks(data_dir, "fam", data_dir / "." / "")
    with pytest.raises(FileNotFoundError, match=r"no annotation files txt_nope-\*\.json"):
        filter_test_leaks(data_dir, "nope", tmp_path / "out")
    (data_dir / "txt_bad-mc.json").write_text(json.dumps({"train": [], "test": [{"question": "q"}]}))
    with pytest.raises(
        AnnotationError, match=r"txt_bad-mc\.json: split 'test', item 0, key 'video': missing"
    ):
        filter_test_leaks(data_dir, "bad", tmp_path / "out")
    assert annotation_families(data_dir) == ["bad", "fam", "other"]


def test_tool_writes_files_prints_ids_and_report(data_dir, tmp_path):
    out = tmp_path / "multi_task"
    result = run_tool("--data_dir", str(data_dir), "--output_dir", str(out), "--dataset", "fam")
    assert result.returncode == 0, result.stderr
    assert "fam: 6 val/test videos, 8 train items removed" in result.stdout
    assert "txt_fam-pretrain.json: train 4 -> 2 items, 2 videos removed" in result.stdout
    assert "removed: v1 v7" in result.stdout
    report = json.loads((out / "leak_filter_report.json").read_text())
    assert [r["dataset"] for r in report] == ["fam"]
    assert {Path(f["file"]).name: f["removed_ids"] for f in report[0]["files"]} == {
        name: ids for name, (_, _, ids) in EXPECTED_REMOVED.items()
    }
    assert report[0]["n_removed_items"] == 8


def test_tool_all_families_quiet_and_refusal(data_dir, tmp_path):
    out = tmp_path / "mt"
    result = run_tool("--data_dir", str(data_dir), "--output_dir", str(out), "--all", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "removed:" not in result.stdout
    assert "other: 0 val/test videos, 0 train items removed" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == sorted([*FAMILY, *OTHER, "leak_filter_report.json"])
    assert json.loads((out / "txt_other-retrieval.json").read_text()) == OTHER["txt_other-retrieval.json"]

    refused = run_tool("--data_dir", str(data_dir), "--output_dir", str(data_dir), "--dataset", "fam")
    assert refused.returncode != 0
    assert "never edits files in place" in refused.stderr
