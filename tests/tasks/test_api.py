"""The Python API (lib.api.Lavender) over one all-task checkpoint: the folder format, save → load, every
input form (a file gives what its extracted TSV row gives), agreement with each task's evaluation, errors."""

from __future__ import annotations

import json
import random
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.api import Lavender, LavenderWarning, Video
from lib.data.annotations import caption_text
from lib.data.extract import extract_videos
from lib.data.frames import ClipTransform, decode_jpeg
from lib.data.tsv import TSVFile, frame_columns
from lib.data.video import VideoDecodeError
from lib.model.checkpoint import save_model_dir
from lib.model.lavender import LavenderConfig
from lib.tasks.run import run

QUESTION = "what color is the small circle?"
OPTIONS = ["red", "green", "blue", "yellow", "white"]
TEXT = "two large red circles move left"


@pytest.fixture(scope="module")
def test_videos(demo_data) -> list[Path]:
    return sorted((demo_data / "videos").glob("demo_test_*.mp4"))


def outputs(api: Lavender, videos) -> dict:
    """Every method's output on ``videos`` (with scores)."""
    return {
        "caption": api.caption(videos, with_scores=True),
        "open": api.answer(videos, QUESTION, with_scores=True),
        "sequence": api.answer(videos, QUESTION, OPTIONS, with_scores=True),
        "retrieval": api.answer(videos, "", OPTIONS, with_scores=True),
        "match": api.match(videos, TEXT),
        "retrieve": api.retrieve([TEXT, "one small blue square moves up"], videos),
    }


# ------------------------------------------------------------------------------------------ the folder


def test_a_run_s_model_folder_is_a_complete_checkpoint(built):
    names = {p.name for p in built.folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= names
    config = json.loads((built.folder / "config.json").read_text())
    inference = config.pop("inference")
    assert LavenderConfig.from_dict(config) == built.model.config
    tasks = inference["tasks"]
    assert {k: [e["name"] for e in v] for k, v in tasks.items()} == {
        "retrieval": ["demo-retrieval"],
        "qaoe": ["demo-qa"],
        "qamc": ["demo-mc", "demo-retmc"],
        "captioning": ["demo-captioning"],
    }
    qa = tasks["qaoe"][0]
    assert qa["answers"] == built.task("demo-qa").candidates and qa["layout"] == "open"
    assert [(e["style"], e["size_txt"]) for e in tasks["qamc"]] == [("sequence", 60), ("retrieval", 16)]
    assert tasks["captioning"][0]["max_gen_length"] == 4
    # the demo TSV was extracted with 4 frames per video; training's random crop is a center crop at eval
    video = inference["video"]
    assert (video["frames_per_video"], video["jpeg_quality"], video["size_short"]) == (4, 75, None)
    assert (video["size_frame"], video["size_img"], video["transform"]) == (4, 64, "img_center_crop")
    card = (built.folder / "README.md").read_text()
    for expected in (
        "demo-qa",
        "demo-retmc",
        "## Evaluation protocol",
        "retrieval style",
        "Not evaluated yet",
    ):
        assert expected in card


def test_save_then_load_gives_the_same_outputs(api, test_videos, tmp_path):
    videos = [str(v) for v in test_videos[:2]]
    before = outputs(api, videos)
    api.save_pretrained(tmp_path / "copy", metrics={"demo-qa/test/acc": 42.5}, metrics_label="test split")
    again = Lavender.from_pretrained(tmp_path / "copy", device="cpu")
    assert outputs(again, videos) == before
    for (name, a), b in zip(api.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
    assert again.settings == api.settings
    card = (tmp_path / "copy" / "README.md").read_text()
    assert "test split:" in card and "| demo-qa/test/acc | 42.5 |" in card
    assert 'Lavender.from_pretrained("copy")' in card  # the folder's name, not the temporary one's


# ------------------------------------------------------------------------------------------ inputs


def close(a, b, tol: float = 1e-5) -> bool:
    """Equal structures: floats within ``tol``, everything else exactly."""
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= tol
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    return a == b


def test_a_file_gives_exactly_what_its_extracted_tsv_row_gives(api, test_videos, tmp_path):
    files = test_videos[:2]
    extract_videos([str(f) for f in files], 4, tmp_path / "img_mine", ordered=True, progress=False)
    rows = TSVFile(tmp_path / "img_mine.tsv")
    for i, path in enumerate(files):
        assert api.read_video(path).jpegs == tuple(frame_columns(rows.row(i)))  # byte for byte
    row = rows.row(0)
    assert api.read_video(row).name == files[0].stem  # a row's id names it
    frames = [decode_jpeg(c) for c in frame_columns(row)]
    forms = [str(files[0]), row, frame_columns(row), frames, np.stack(frames), api.read_video(files[0])]
    spec = api.settings["video"]
    transform = ClipTransform(spec["size_img"], train=False, mode=spec["transform"])
    clips = [api.read_video(form).clip(spec["size_frame"], transform) for form in forms]
    assert all(torch.equal(clip, clips[0]) for clip in clips[1:])
    results = outputs(api, forms)  # the forms side by side in one batch
    for key in ("caption", "open", "sequence", "retrieval", "match"):
        assert all(close(r, results[key][0]) for r in results[key][1:]), key
    for ranking in results["retrieve"]:  # six copies of one video: six equal scores
        assert max(s for _, s in ranking) - min(s for _, s in ranking) <= 1e-5


def test_one_or_many_inputs_broadcasting_and_batch_size(api, test_videos):
    videos = [str(v) for v in test_videos[:3]]
    captions = api.caption(videos)
    assert captions == [api.caption(v) for v in videos] and all(isinstance(c, str) for c in captions)
    questions = [QUESTION, "how many objects are there?"]
    assert api.answer(videos[0], questions) == [api.answer(videos[0], q) for q in questions]
    assert api.answer(videos[:2], questions) == [api.answer(v, q) for v, q in zip(videos, questions)]
    score = api.match(videos[0], TEXT)
    assert isinstance(score, float) and 0 < score < 1
    assert api.match(videos, TEXT) == pytest.approx([api.match(v, TEXT) for v in videos], abs=1e-6)
    matrix = api.scores([TEXT, "a cross"], videos)
    ranked = api.retrieve([TEXT, "a cross"], videos, top_k=2)
    for row, ranking in zip(matrix, ranked):
        assert [j for j, _ in ranking] == list(np.argsort(-row, kind="stable")[:2])
        assert [s for _, s in ranking] == pytest.approx(sorted(row, reverse=True)[:2])
    one_by_one = Lavender(api.model, api.tok, api.settings, batch_size=1)
    assert one_by_one.scores([TEXT], videos) == pytest.approx(matrix[:1], abs=1e-5)
    assert one_by_one.caption(videos) == captions
    image = decode_jpeg(api.read_video(videos[0]).jpegs[0])  # one frame: repeated to a clip
    assert isinstance(api.caption(image), str)
    with pytest.raises(ValueError, match="equal lengths"):
        api.match(videos, [TEXT, TEXT])


# ------------------------------------------------------------------------------------------ the tasks


def test_the_api_reproduces_every_task_s_own_evaluation(api, built):
    model = api.model
    store = built.task("demo-qa").store

    def row_of(video_id: str) -> Video:
        return Video(video_id, jpegs=tuple(store.frames(video_id)))

    with torch.no_grad():
        qa = built.task("demo-qa")
        records = qa.ann["test"]
        expected = qa.predict(model, "test", qa.predict_batch)
        got = api.answer([row_of(r.video) for r in records], [r.question for r in records], with_scores=True)
        assert [g["answer"] for g in got] == [e[0] for e in expected]
        assert [[a for a, _ in g["top"]] for g in got] == expected

        for name in ("demo-mc", "demo-retmc"):
            mc = built.task(name)
            records = mc.ann["test"]
            expected = torch.stack(mc.predict(model, "test", mc.predict_batch))
            # shown as probabilities: the task's own (shift-averaged) digit softmax / p("true") of each option
            expected = expected if mc.style == "sequence" else torch.sigmoid(expected)
            assert mc.shifts == (3 if mc.style == "sequence" else 1)
            got = api.answer(
                [row_of(r.video) for r in records],
                [r.question for r in records],
                [list(r.options) for r in records],
                task=name,
                with_scores=True,
            )
            assert torch.tensor([g["scores"] for g in got]) == pytest.approx(expected, abs=1e-5)

        ret = built.task("demo-retrieval")
        video_ids, feats, masks = ret.encode_videos(model, ret.ann["test"])
        texts = [caption_text(r, False, random.Random(0)) for r in ret.ann["test"]]
        expected = ret.make_predictor(model).score_matrix(texts, feats, masks)
        assert api.scores(texts, [row_of(v) for v in video_ids]) == pytest.approx(expected, abs=1e-5)

        cap = built.task("demo-captioning")
        expected = cap.predict(model, "test")
        got = api.caption([row_of(p["video"]) for p in expected], with_scores=True)
        assert [g["caption"] for g in got] == [p["caption"] for p in expected]
        assert [g["score"] for g in got] == pytest.approx([p["score"] for p in expected], abs=1e-4)


def test_kinds_the_checkpoint_lacks_run_zero_shot_with_a_warning(api, test_videos):
    video = str(test_videos[0])
    settings = json.loads(json.dumps(api.settings))
    settings["tasks"]["qaoe"][0]["answers"] = []
    settings["tasks"]["qamc"] = []
    settings["tasks"]["captioning"] = []
    lacking = Lavender(api.model, api.tok, settings)
    with pytest.warns(LavenderWarning, match="no answer list"):
        answer = lacking.answer(video, QUESTION)
    assert answer in api.tok.get_vocab()  # one wordpiece: the arg-max over the vocabulary
    with pytest.warns(LavenderWarning, match="not trained for caption"):
        assert isinstance(lacking.caption(video, max_gen_length=3), str)
    with pytest.warns(LavenderWarning, match="not trained for qamc"):
        chosen = lacking.answer(video, QUESTION, OPTIONS, with_scores=True)
    # without a multiple-choice task, options are matched as "question option" texts
    matched = api.match(video, [f"{QUESTION} {o}" for o in OPTIONS])
    assert chosen["scores"] == pytest.approx(matched, abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per kind
        lacking.caption(video, max_gen_length=3)


# ------------------------------------------------------------------------------------------ errors


def test_clear_errors_for_missing_checkpoint_tokenizer_video_and_task(
    api, built, test_videos, tmp_path, minilm_dir
):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        Lavender.from_pretrained(tmp_path / "nothing")
    bare = tmp_path / "bare"
    shutil.copytree(built.folder, bare)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (bare / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer files.*tokenizer="):
        Lavender.from_pretrained(bare)
    assert Lavender.from_pretrained(bare, tokenizer=minilm_dir).tasks == api.tasks
    (bare / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        Lavender.from_pretrained(bare, tokenizer=minilm_dir)

    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    with pytest.raises(VideoDecodeError, match="corrupt.mp4"):
        api.caption([str(test_videos[0]), str(corrupt)])
    with pytest.raises(ValueError, match="no qamc task named 'nope'.*demo-mc"):
        api.answer(str(test_videos[0]), QUESTION, OPTIONS, task="nope")
    with pytest.raises(ValueError, match="expected an RGB uint8 array"):
        api.caption([np.zeros((8, 8), np.uint8)] * 2)


def test_a_converted_reference_folder_loads_with_its_args(api, test_videos, tmp_path, minilm_dir):
    converted = save_model_dir(api.model, tmp_path / "converted")  # what _tools/convert_checkpoint.py writes
    args = {"type": "qaoe", "task": "msrvtt-qa", "size_frame": 4, "size_img": 64, "size_txt": 16}
    with pytest.warns(LavenderWarning):
        model = Lavender.from_pretrained(converted, tokenizer=minilm_dir, reference_args=args)
        assert model.tasks == {"retrieval": [], "qaoe": ["msrvtt-qa"], "qamc": [], "captioning": []}
        video = str(test_videos[0])
        assert model.match(video, TEXT) == pytest.approx(api.match(video, TEXT), abs=1e-6)
    with pytest.raises(ValueError, match="reference_args"):
        Lavender.from_pretrained(converted / "model.safetensors")


@pytest.mark.slow
def test_a_training_run_writes_a_checkpoint_the_api_loads(tiny_args, demo_data):
    args = ["--task", "demo-qa", "--steps_per_epoch", "1", "--save_model_every_epoch", "false"]
    run("qaoe", [*tiny_args, *args])
    folder = Path(tiny_args[tiny_args.index("--path_output") + 1]) / "model"
    model = Lavender.from_pretrained(folder, device="cpu")
    assert model.tasks == {"retrieval": [], "qaoe": ["demo-qa"], "qamc": [], "captioning": []}
    assert (folder / "args.json").is_file()
    card = (folder / "README.md").read_text()
    # the run's final test evaluation replaces the validation numbers the card had during training
    assert "test split (final evaluation)" in card and "| demo-qa/test/acc |" in card
    assert 'Lavender.from_pretrained("model")' in card
    answers = model.answer([str(p) for p in sorted(demo_data.glob("videos/demo_val_*.mp4"))], QUESTION)
    assert set(answers) <= set(model.settings["tasks"]["qaoe"][0]["answers"])
