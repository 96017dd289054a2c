"""Annotation readers: every reference format, errors that locate the problem, skipping, packing."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest

from lib.data.annotations import (
    AnnotationError,
    CaptionItem,
    ChoiceItem,
    OpenQAItem,
    PretrainItem,
    RecordList,
    coco_references,
    load_annotations,
    read_json_object,
    write_json_atomic,
)


def write(tmp_path: Path, name: str, obj) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def choice(video: str, answer: int, question: str = "what does he do?", n: int = 5) -> dict:
    return {"question": question, **{f"option_{k}": f"option text {k}" for k in range(n)}, "answer": answer,
            "video": video}  # fmt: skip


# ------------------------------------------------------------------------------------------ each format


def test_pretrain_dict_splits(tmp_path):
    path = write(tmp_path, "txt_webvid.json", {
        "train": {"31353427": ["a dog runs", "a brown dog"], "00000001": "one caption"},
        "val": {"00000002": ["a cat"]},
    })  # fmt: skip
    ann = load_annotations(path, "pretrain")
    assert list(ann.splits) == ["train", "val"]
    assert list(ann["train"]) == [
        PretrainItem("31353427", ("a dog runs", "a brown dog")),
        PretrainItem("00000001", ("one caption",)),
    ]
    assert ann["val"][0] == PretrainItem("00000002", ("a cat",))
    assert ann.skipped == {"train": 0, "val": 0}
    with pytest.raises(KeyError, match="split 'test' not loaded"):
        ann["test"]


def test_retrieval_caption_string_or_paragraph(tmp_path):
    path = write(tmp_path, "txt_didemo-retrieval.json", {
        "train": [{"video": "v1", "caption": "a man sings"}, {"video": "v1", "caption": "someone sings"}],
        "val": [{"video": "v2", "caption": ["first sentence.", "", "second sentence."]}],
        "test": [{"video": "v3", "caption": "a dog"}],
    })  # fmt: skip
    ann = load_annotations(path, "retrieval")
    assert [len(ann[s]) for s in ("train", "val", "test")] == [2, 1, 1]
    assert ann["train"][1] == CaptionItem("v1", ("someone sings",))
    paragraph = ann["val"][0]
    assert paragraph.sentences == ("first sentence.", "second sentence.")  # empty sentence dropped
    assert paragraph.text == "first sentence. second sentence."
    only_test = load_annotations(path, "caption", splits=["test"])
    assert list(only_test.splits) == ["test"]


def test_open_qa_vocab_answer_text_and_types(tmp_path):
    path = write(tmp_path, "txt_msvd-qa.json", {
        "train": [
            {"video": "v1", "question": "what is it?", "answer": 1, "answer_text": "dog", "type": "what"},
            {"video": "v2", "question": "who is it?", "answer": 0, "qtype": 3},  # answer_text from the vocab
        ],
        "test": [{"video": "v3", "question": "what color?", "answer": 2, "answer_text": "red"}],
        "vocab": ["man", "dog", "red"],
    })  # fmt: skip
    ann = load_annotations(path, "qa_open")
    assert ann["train"][0] == OpenQAItem("v1", "what is it?", 1, "dog", "what")
    assert ann["train"][1] == OpenQAItem("v2", "who is it?", 0, "man", "3")
    assert ann["test"][0].qtype is None
    assert ann.vocab == ["man", "dog", "red"]
    assert ann.ans2label == {"man": 0, "dog": 1, "red": 2}


def test_open_qa_ans2label_only_gives_vocab(tmp_path):
    path = write(tmp_path, "txt_lsmdc-fib.json", {
        "train": [{"video": "v1", "question": "he [MASK] away", "answer": 1}],
        "ans2label": {"walks": 1, "runs": 0},
    })  # fmt: skip
    ann = load_annotations(path, "qa_open")
    assert ann.vocab == ["runs", "walks"]
    assert ann["train"][0].answer_text == "walks"


def test_multiple_choice_and_retrieval_mc(tmp_path):
    retmc = choice("v2", 4, question="")
    path = write(tmp_path, "txt_tgif-action.json", {"train": [choice("v1", 2)], "test": [retmc]})
    ann = load_annotations(path, "qa_choice")
    item = ann["train"][0]
    assert isinstance(item, ChoiceItem)
    assert item.options == tuple(f"option text {k}" for k in range(5))
    assert item.answer == 2
    assert ann["test"][0].question == ""


# ----------------------------------------------------------------------------------------------- errors


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "txt_x-retrieval.json"
    path.write_text('{"train": [{"video": "v1", "caption": "a"},]}')
    with pytest.raises(AnnotationError, match=r"txt_x-retrieval\.json: not valid JSON \(.*line 1"):
        load_annotations(path, "retrieval")
    with pytest.raises(AnnotationError, match="file not found"):
        load_annotations(tmp_path / "missing.json", "retrieval")
    write(tmp_path, "list.json", [1, 2])
    with pytest.raises(AnnotationError, match="top level must be a JSON object"):
        read_json_object(tmp_path / "list.json")


@pytest.mark.parametrize(
    ("kind", "item", "key", "message"),
    [
        ("retrieval", {"caption": "a"}, "video", "missing"),
        ("retrieval", {"video": "v1", "caption": 7}, "caption", "non-empty string or list"),
        ("retrieval", {"video": "v1", "caption": ["ok", 3]}, "caption", "list of strings"),
        ("retrieval", ["v1", "a"], None, "expected a JSON object"),
        ("qa_open", {"video": "v1", "question": "q", "answer": "1", "answer_text": "a"}, "answer", "integer"),
        ("qa_open", {"video": "v1", "question": "q", "answer": 5}, "answer_text", "missing"),
        ("qa_open", {"video": "v1", "question": "", "answer": 0, "answer_text": "a"}, "question", "empty"),
        ("qa_choice", {**choice("v1", 0), "answer": 5}, "answer", r"not an option index in \[0, 5\)"),
        ("qa_choice", {**choice("v1", 0), "option_3": None}, "option_3", "expected a string"),
        ("qa_choice", {"question": "q", "answer": 0, "video": "v1"}, "option_0", "missing"),
    ],
)
def test_bad_item_is_located(tmp_path, kind, item, key, message):
    good = choice("v0", 1) if kind == "qa_choice" else {
        "video": "v0", "question": "q", "answer": 0, "answer_text": "a", "caption": "c"
    }  # fmt: skip
    path = write(tmp_path, "ann.json", {"train": [good, good], "val": [good, good, item]})
    with pytest.raises(AnnotationError, match=message) as info:
        load_annotations(path, kind)
    error = info.value
    assert (error.path, error.split, error.index, error.key) == (path, "val", 2, key)
    assert str(error).startswith(f"{path}: split 'val', item 2")


def test_file_level_problems(tmp_path):
    path = write(tmp_path, "ann.json", {"train": {"v1": "a"}, "val": []})
    with pytest.raises(AnnotationError, match="split 'train': expected a list of items, got dict"):
        load_annotations(path, "retrieval")
    with pytest.raises(AnnotationError, match=r"has no split 'test' \(it has: train, val\)"):
        load_annotations(path, "pretrain", splits=["train", "test"])
    with pytest.raises(AnnotationError, match="has none of the splits"):
        load_annotations(write(tmp_path, "empty.json", {"vocab": []}), "qa_open")
    with pytest.raises(ValueError, match="unknown annotation kind 'vqa'"):
        load_annotations(path, "vqa")


def test_option_count_must_agree(tmp_path):
    path = write(tmp_path, "mc.json", {"train": [choice("v1", 0), choice("v2", 0, n=4)]})
    with pytest.raises(AnnotationError, match="has 4 options, expected 5") as info:
        load_annotations(path, "qa_choice")
    assert info.value.index == 1
    with pytest.raises(AnnotationError, match="has 5 options, expected 3"):
        load_annotations(path, "qa_choice", n_options=3)


def test_unknown_video_ids(tmp_path):
    path = write(tmp_path, "txt_webvid.json", {"train": {"a": ["x"], "b": ["y"], "c": ["z"]}})
    with pytest.raises(AnnotationError, match="video 'b' is not among the given video ids") as info:
        load_annotations(path, "pretrain", video_ids=["a", "c"])
    assert (info.value.split, info.value.index, info.value.key) == ("train", 1, "b")
    retrieval = write(
        tmp_path, "ret.json", {"test": [{"video": "a", "caption": "x"}, {"video": "q", "caption": "y"}]}
    )
    with pytest.raises(AnnotationError, match="split 'test', item 1, key 'video'"):
        load_annotations(retrieval, "retrieval", video_ids={"a"})


def test_skip_counts_and_logs_bad_items(tmp_path, caplog):
    path = write(tmp_path, "ret.json", {
        "train": [{"video": "a", "caption": "x"}, {"video": "gone", "caption": "y"}, {"video": "b"},
                  {"video": "b", "caption": "z"}],
        "val": [{"video": "a", "caption": "x"}],
    })  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="lib.data.annotations"):
        ann = load_annotations(path, "retrieval", video_ids={"a", "b"}, on_error="skip")
    assert [item.video for item in ann["train"]] == ["a", "b"]
    assert ann.skipped == {"train": 2, "val": 0}
    assert ann.n_skipped == 2
    assert "skipped 2 of 4 items of split 'train'" in caplog.text
    assert "video 'gone'" in caplog.text
    with pytest.raises(ValueError, match="on_error"):
        load_annotations(path, "retrieval", on_error="ignore")


# ------------------------------------------------------------------------------------- packing, COCO, io


def test_record_list_packs_and_rebuilds():
    items = [
        OpenQAItem(f"v{i}", f"question {i} é?", i, "answer", None if i % 2 else "what") for i in range(50)
    ]
    records = RecordList(OpenQAItem, items)
    assert len(records) == 50
    assert list(records) == items
    assert records[-1] == items[-1]
    assert records[10:13] == items[10:13]
    assert pickle.loads(pickle.dumps(records))[7] == items[7]
    with pytest.raises(IndexError, match="out of range for 50"):
        records[50]
    paragraphs = RecordList(CaptionItem, [CaptionItem("v", ("one.", "two."))])
    assert paragraphs[0].sentences == ("one.", "two.")  # lists come back as tuples
    assert len(RecordList(CaptionItem)) == 0


def test_coco_references_structure():
    from pycocotools.coco import COCO

    items = [CaptionItem("v1", ("a dog runs",)), CaptionItem("v2", ("a", "b")), CaptionItem("v1", ("a pup",))]
    refs = coco_references(items)
    assert refs["type"] == "captions"
    assert refs["images"] == [{"id": "v1"}, {"id": "v2"}]
    assert refs["annotations"] == [
        {"image_id": "v1", "id": 0, "caption": "a dog runs"},
        {"image_id": "v2", "id": 1, "caption": "a b"},
        {"image_id": "v1", "id": 2, "caption": "a pup"},
    ]
    coco = COCO()
    coco.dataset = refs
    coco.createIndex()
    assert sorted(coco.getImgIds()) == ["v1", "v2"]
    assert [a["caption"] for a in coco.imgToAnns["v1"]] == ["a dog runs", "a pup"]


def test_write_json_atomic_leaves_no_temp(tmp_path):
    path = write_json_atomic(tmp_path / "out.json", {"train": ["é"]})
    assert json.loads(path.read_text(encoding="utf-8")) == {"train": ["é"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def _jsonl(path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_alpro_jsonl_folders_read_as_they_are(tmp_path):
    txt = tmp_path / "msrvtt_ret" / "txt"
    _jsonl(txt / "train.jsonl", [{"caption": "a man sings", "clip_name": "video1"}])
    _jsonl(txt / "test.jsonl", [{"caption": "a dog runs", "clip_name": "video2"}])
    ret = load_annotations(txt, "retrieval")
    assert [(r.video, r.text) for r in ret["train"]] == [("video1", "a man sings")]
    assert [(r.video, r.text) for r in ret["test"]] == [("video2", "a dog runs")]

    qa = tmp_path / "msrvtt_qa"
    (qa / "train_ans2label.json").parent.mkdir(parents=True, exist_ok=True)
    (qa / "train_ans2label.json").write_text(json.dumps({"man": 0, "dog": 1}))
    row = {"answer": "dog", "question": "what runs?", "video_id": "video2", "answer_type": "what"}
    _jsonl(qa / "txt" / "train.jsonl", [{**row, "question_id": 0}])
    _jsonl(qa / "txt" / "test.jsonl", [{**row, "answer": "cat", "question_id": 1}])
    file = load_annotations(qa / "txt", "qa_open")
    assert file.vocab == ["man", "dog"]
    first = file["train"][0]
    assert (first.video, first.question, first.answer, first.answer_text, first.qtype) == (
        "video2", "what runs?", 1, "dog", "what",
    )  # fmt: skip
    assert (file["test"][0].answer, file["test"][0].answer_text) == (-1, "cat")  # outside the answer list
    with pytest.raises(AnnotationError, match="line 1 is not valid JSON"):
        (txt / "val.jsonl").write_text("{oops\n")
        load_annotations(txt, "retrieval")
