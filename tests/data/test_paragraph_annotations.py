"""Paragraph annotations read as their datasets ship them: ActivityNet Captions, DiDeMo (collaborative-experts
split), LF-VILA's jsonl, and our own JSON; records pack and come back with their timestamps."""

from __future__ import annotations

import json
import pickle

import pytest

from lib.data.annotations import AnnotationError, ParagraphItem, load_annotations

ACTIVITYNET_TRAIN = {
    "v_QOlSCBRmfWY": {
        "duration": 82.73,
        "timestamps": [[0.83, 19.86], [17.37, 60.81], [56.26, 79.42]],
        "sentences": [
            "A young woman is seen standing in a room and leads into her dancing.",
            " The girl dances around the room while the camera captures her movements.",
            " She continues dancing around the room and ends by laying on the floor.",
        ],
    },
    "v_ehGHCYKzyZ8": {
        "duration": 61.72,
        "timestamps": [[0, 12.5], [70.0, 64.0]],  # the second pair reversed and past the end (it happens)
        "sentences": ["A man is standing in a field.", "He throws a ball."],
    },
}


def test_activitynet_captions_folder_and_single_file(tmp_path):
    folder = tmp_path / "activitynet"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(ACTIVITYNET_TRAIN))
    val = {"v_x": {"duration": 10, "timestamps": [[1, 2]], "sentences": ["A cat."]}}
    (folder / "val_1.json").write_text(json.dumps(val))
    ann = load_annotations(folder, "paragraph")
    assert list(ann.splits) == ["train", "val"]  # val_1 is the split paragraph retrieval reports
    first, second = ann["train"]
    assert first == ParagraphItem(
        "v_QOlSCBRmfWY",
        (
            "A young woman is seen standing in a room and leads into her dancing.",
            "The girl dances around the room while the camera captures her movements.",
            "She continues dancing around the room and ends by laying on the floor.",
        ),
        ((0.83, 19.86), (17.37, 60.81), (56.26, 79.42)),
        82.73,
    )
    assert second.timestamps == ((0.0, 12.5), (61.72, 61.72))  # put in order, clipped to the duration
    single = load_annotations(folder / "val_1.json", "paragraph")
    assert list(single.splits) == ["val"] and single["val"][0].duration == 10.0


def test_didemo_collaborative_experts_split(tmp_path):
    folder = tmp_path / "didemo"
    folder.mkdir()
    captions = {
        "10015567@N08_3655084291": [["a", "baby", "crawls"], ["the", "baby", "stops"]],
        "10028491@N05_3420318064": [["people", "dance"]],
    }
    (folder / "raw-captions.pkl").write_bytes(pickle.dumps(captions))
    (folder / "train_list.txt").write_text("10015567@N08_3655084291.mov\n")
    (folder / "test_list.txt").write_text("10028491@N05_3420318064.mp4\n\n")
    ann = load_annotations(folder, "paragraph")
    assert ann["train"][0] == ParagraphItem("10015567@N08_3655084291", ("a baby crawls", "the baby stops"))
    assert ann["test"][0].sentences == ("people dance",) and ann["test"][0].timestamps is None
    assert "val" not in ann.splits


def test_didemo_captions_pickle_never_runs_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    folder = tmp_path / "didemo"
    folder.mkdir()
    (folder / "raw-captions.pkl").write_bytes(pickle.dumps({"v": Payload()}))
    (folder / "train_list.txt").write_text("v\n")
    with pytest.raises(AnnotationError, match="raw-captions.pkl"):
        load_annotations(folder, "paragraph")


def test_lfvila_jsonl_text_as_a_string_or_sentences(tmp_path):
    folder = tmp_path / "lfvila"
    folder.mkdir()
    rows = [{"clip_id": "vid1", "text": ["he opens the box.", "he takes out a cake."]},
            {"clip_id": "vid2", "text": "a paragraph in one string."}]  # fmt: skip
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "test.jsonl").write_text(json.dumps(rows[1]) + "\n")
    ann = load_annotations(folder, "paragraph")
    assert ann["train"][0].sentences == ("he opens the box.", "he takes out a cake.")
    assert ann["train"][1].sentences == ("a paragraph in one string.",) and ann["test"][0].video == "vid2"
    single = load_annotations(folder / "test.jsonl", "paragraph")
    assert list(single.splits) == ["test"]
    (folder / "train.jsonl").write_text('{"clip_id": "vid1"}\n')
    with pytest.raises(AnnotationError, match="item 0, key 'sentences': missing"):
        load_annotations(folder, "paragraph")


def test_own_paragraph_json_and_errors(tmp_path):
    path = tmp_path / "txt_paragraphs.json"
    good = {"video": "v1", "sentences": ["one.", "", "two."], "timestamps": [[0, 1], [1, 2], [2, 3]]}
    path.write_text(json.dumps({"train": [good, {"video": "v2", "caption": "just text."}]}))
    ann = load_annotations(path, "paragraph")
    assert ann["train"][0].sentences == ("one.", "two.") and ann["train"][0].timestamps == ((0, 1), (2, 3))
    assert ann["train"][1] == ParagraphItem("v2", ("just text.",))
    path.write_text(json.dumps({"train": [{"video": "v1", "sentences": ["a", "b"], "timestamps": [[0, 1]]}]}))
    with pytest.raises(AnnotationError, match="one \\[start, end\\] per sentence"):
        load_annotations(path, "paragraph")
    skipped = load_annotations(path, "paragraph", on_error="skip")
    assert len(skipped["train"]) == 0 and skipped.n_skipped == 1
    (tmp_path / "notes.json").write_text(json.dumps({"v": {"duration": 1, "sentences": ["x"]}}))
    with pytest.raises(AnnotationError, match="split from the file name"):
        load_annotations(tmp_path / "notes.json", "paragraph")
