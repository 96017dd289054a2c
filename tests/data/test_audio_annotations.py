"""The audio datasets' annotation files in their public layouts (VALOR, AudioCaps, Clotho, FAVDBench,
MUSIC-AVQA), read as they are into the items the tasks consume; a broken row is an error naming the file,
the row and the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lib.data.annotations import (
    AnnotationError,
    CaptionItem,
    ChoiceItem,
    OpenQAItem,
    ParagraphItem,
    PretrainItem,
    load_annotations,
)


def write(path: Path, content: str | object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


def test_valor_captions_id_lists_and_caption_annotation(tmp_path):
    folder = tmp_path / "valor32k"
    write(
        folder / "txt_mapper.json", {"v1": ["A dog barks.", "A dog barking"], "v2": "Rain falls", "v3": ["x"]}
    )
    write(folder / "train_id.json", ["v1", "v2"])
    write(folder / "test_id.json", ["v3"])
    ret = load_annotations(folder, "retrieval")
    assert list(ret["train"]) == [CaptionItem("v1", ("A dog barks.",)), CaptionItem("v1", ("A dog barking",)),
                                  CaptionItem("v2", ("Rain falls",))]  # fmt: skip
    pretrain = list(load_annotations(folder, "pretrain")["train"])
    assert pretrain == [
        PretrainItem("v1", ("A dog barks.", "A dog barking")),
        PretrainItem("v2", ("Rain falls",)),
    ]
    coco = {"annotations": [{"image_id": "v3", "caption": "a man sings", "id": 0},
                            {"image_id": "v3", "caption": "someone sings", "id": 1}]}  # fmt: skip
    write(folder / "caption_annotation.json", coco)
    cap = load_annotations(folder, "caption")
    assert [i.text for i in cap["test"]] == [
        "a man sings",
        "someone sings",
    ]  # the references VALOR scores with
    assert len(load_annotations(folder, "retrieval")["test"]) == 1  # retrieval keeps the mapper's texts
    write(folder / "test_id.json", ["v3", "v9"])
    with pytest.raises(AnnotationError, match=r"txt_mapper.json: key 'v9': is listed in the split's id list"):
        load_annotations(folder, "retrieval")


def test_valor_qa_mappers_per_split_open_and_multiple_choice(tmp_path):
    folder = tmp_path / "music-avqa"
    write(folder / "train_id_vqa.json", ["a", "b"])
    write(folder / "test_id_vqa.json", ["c"])
    train = {
        "a": [{"question": "is it playing?", "answer": "yes"}, {"question": "how many?", "answer": "two"}],
        "b": [{"question": "is it loud?", "answer": "yes"}],
    }
    write(folder / "txt_mapper_vqa_train.json", train)
    write(folder / "txt_mapper_vqa_test.json", {"c": [{"question": "what sounds?", "answer": "piano"}]})
    ann = load_annotations(folder, "qa_open")
    assert ann.ans2label == {"yes": 0, "two": 1}
    assert list(ann["train"])[1] == OpenQAItem("a", "how many?", 1, "two")
    assert list(ann["test"]) == [OpenQAItem("c", "what sounds?", -1, "piano")]  # unseen in train: label -1
    mc = tmp_path / "mc"
    write(mc / "test_id.json", ["c"])
    write(mc / "txt_mapper.json", {"c": [{"question": "which?", "answer": 1, "choice": ["x", "y"]}]})
    assert list(load_annotations(mc, "qa_choice")["test"]) == [ChoiceItem("c", "which?", ("x", "y"), 1)]
    write(folder / "txt_mapper_vqa_test.json", {"c": [{"question": "what sounds?"}]})
    with pytest.raises(AnnotationError, match=r"txt_mapper_vqa_test.json: key 'c': question 0: expected"):
        load_annotations(folder, "qa_open")


AUDIOCAPS_TRAIN = """audiocap_id,youtube_id,start_time,caption
91139,r1nicOVtvkQ,130,A woman talks nearby as water pours
58146,UDGBjjwyaqE,20,"Multiple clanging and clanking sounds, then a crash"
"""


def test_audiocaps_csv(tmp_path):
    folder = tmp_path / "audiocaps"
    write(folder / "train.csv", AUDIOCAPS_TRAIN)
    write(
        folder / "test.csv",
        "audiocap_id,youtube_id,start_time,caption\n1,zzz,0,Birds chirp\n2,zzz,0,Birds sing\n",
    )
    ann = load_annotations(folder, "retrieval")
    assert list(ann.splits) == ["train", "test"]
    assert ann["train"][1] == CaptionItem(
        "UDGBjjwyaqE", ("Multiple clanging and clanking sounds, then a crash",)
    )
    assert [i.video for i in ann["test"]] == ["zzz", "zzz"]  # five (here two) captions per test clip
    single = load_annotations(folder / "test.csv", "caption")
    assert list(single.splits) == ["test"]
    write(folder / "train.csv", AUDIOCAPS_TRAIN + "7,abc,0,\n")
    with pytest.raises(AnnotationError, match=r"train.csv: key 'caption': line 4: 'caption' is empty"):
        load_annotations(folder, "retrieval")
    write(folder / "train.csv", "audiocap_id,ytid,caption\n1,a,b\n")
    with pytest.raises(AnnotationError, match=r"train.csv: the header lacks youtube_id, start_time"):
        load_annotations(folder, "retrieval")


def test_clotho_csv(tmp_path):
    folder = tmp_path / "clotho"
    header = "file_name,caption_1,caption_2,caption_3,caption_4,caption_5\n"
    write(folder / "clotho_captions_development.csv",
          header + "Distorted AM Radio noise.wav,a radio hums,static,noise,hiss,buzz\n")  # fmt: skip
    write(folder / "clotho_captions_evaluation.csv", header + "rain.wav,r1,r2,r3,r4,r5\n")
    ann = load_annotations(folder, "caption")
    assert list(ann.splits) == ["train", "test"]
    assert [i.video for i in ann["train"]] == ["Distorted AM Radio noise"] * 5
    assert [i.text for i in ann["test"]] == ["r1", "r2", "r3", "r4", "r5"]
    assert list(load_annotations(folder, "pretrain")["test"]) == [
        PretrainItem("rain", ("r1", "r2", "r3", "r4", "r5"))
    ]
    write(folder / "clotho_captions_evaluation.csv", header + "rain.wav,r1,r2,r3,r4\n")
    with pytest.raises(
        AnnotationError, match=r"evaluation.csv: key 'caption_5': line 2: 'caption_5' is empty"
    ):
        load_annotations(folder, "caption")


FAVD = "a man plays a guitar. the man wears a red shirt. the guitar is brown. the guitar sounds soft."


def test_favdbench_caption_coco_format(tmp_path):
    folder = tmp_path / "metadata"
    write(
        folder / "train.caption_coco_format.json",
        [{"image_id": "-0mGmSIT8J4_000030_000040", "caption": FAVD}],
    )
    write(folder / "test.caption_coco_format.json",
          {"annotations": [{"image_id": "test/abc_01_02.mp4", "caption": FAVD, "id": 0}]})  # fmt: skip
    cap = load_annotations(folder, "caption")
    assert cap["train"][0] == CaptionItem("-0mGmSIT8J4_000030_000040", (FAVD,))
    assert cap["test"][0].video == "abc_01_02"  # folder and extension dropped
    assert load_annotations(folder, "paragraph")["train"][0] == ParagraphItem(
        "-0mGmSIT8J4_000030_000040", (FAVD,)
    )
    write(folder / "train.caption_coco_format.json", [{"image_id": "x", "caption": FAVD}, {"image_id": "y"}])
    with pytest.raises(
        AnnotationError, match=r"train.caption_coco_format.json: item 1, key 'caption': expected"
    ):
        load_annotations(folder, "caption")


AVQA_TRAIN = [
    {"video_id": "00000272", "question_id": 2, "type": '["Audio", "Counting"]',
     "question_content": "How many musical instruments were heard throughout the video?",
     "templ_values": "[]", "question_deleted": 0, "anser": "two"},
    {"video_id": "00000272", "question_id": 9, "type": '["Audio-Visual", "Comparative"]',
     "question_content": "Is the <Object> more rhythmic than the <Object>?",
     "templ_values": '["cello", "piano"]', "question_deleted": 0, "anser": "yes"},
    {"video_id": "00000310", "question_id": 11, "type": '["Visual", "Location"]',
     "question_content": "Where is the <FL> instrument?", "templ_values": "['first']", "anser": "left"},
]  # fmt: skip


def test_music_avqa_fills_templates_and_reads_anser(tmp_path):
    folder = tmp_path / "avqa"
    write(folder / "avqa-train.json", AVQA_TRAIN)
    write(folder / "avqa-test.json", [{**AVQA_TRAIN[1], "video_id": "00000999", "anser": "no"}])
    ann = load_annotations(folder, "qa_open")
    assert [i.question for i in ann["train"]] == [
        "How many musical instruments were heard throughout the video?",
        "Is the cello more rhythmic than the piano?",
        "Where is the first instrument?",
    ]
    assert ann.ans2label == {"two": 0, "yes": 1, "left": 2}
    assert ann["train"][1] == OpenQAItem("00000272", "Is the cello more rhythmic than the piano?", 1, "yes",
                                         "Audio-Visual_Comparative")  # fmt: skip
    assert ann["test"][0] == OpenQAItem("00000999", "Is the cello more rhythmic than the piano?", -1, "no",
                                        "Audio-Visual_Comparative")  # fmt: skip
    with pytest.raises(AnnotationError, match=r"holds questions, which make qa_open"):
        load_annotations(folder, "retrieval")
    write(folder / "avqa-train.json", [AVQA_TRAIN[0], {**AVQA_TRAIN[1], "templ_values": '["cello"]'}])
    expected = r"avqa-train.json: item 1, key 'templ_values': question .* has 2 placeholder\(s\) "
    with pytest.raises(
        AnnotationError, match=expected + r"\['<Object>', '<Object>'\] but templ_values has 1"
    ):
        load_annotations(folder, "qa_open")
    write(folder / "avqa-train.json", [{k: v for k, v in AVQA_TRAIN[0].items() if k != "anser"}])
    with pytest.raises(
        AnnotationError, match=r"avqa-train.json: item 0, key 'anser': expected a non-empty anser"
    ):
        load_annotations(folder, "qa_open")
