"""The command line (python -m lib.predict): every command's JSON Lines, folders with corrupt files, frame
TSVs as inputs, exit statuses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lib.data.extract import extract_videos
from lib.predict import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder(demo_data, tmp_path_factory) -> Path:
    """Three good videos, a truncated one, an empty one and a file that is not a video."""
    out = tmp_path_factory.mktemp("videos")
    videos = sorted((demo_data / "videos").glob("demo_test_*.mp4"))
    for video in videos[:3]:
        shutil.copy(video, out / video.name)
    (out / "cut.mp4").write_bytes(videos[3].read_bytes()[:2000])
    (out / "empty.mp4").write_bytes(b"")
    (out / "notes.txt").write_text("not a video; not listed")
    return out


def run_cli(capsys, *argv: str) -> tuple[int, list[dict], str]:
    """main(argv) in this process: (exit status, the JSON records of stdout, stderr)."""
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_caption_a_folder_names_bad_files_and_goes_on(built, api, folder, capsys):
    status, records, err = run_cli(capsys, "--ckpt", built.folder, "caption", folder, "--batch_size", "2")
    assert status == 0
    names = [Path(r["video"]).name for r in records]  # sorted; notes.txt is not a video
    assert names == ["cut.mp4", *[f"demo_test_0000{i}.mp4" for i in range(3)], "empty.mp4"]
    errors = {Path(r["video"]).name: r["error"] for r in records if "error" in r}
    assert set(errors) == {"cut.mp4", "empty.mp4"} and "empty" in errors["empty.mp4"]
    good = [r for r in records if "error" not in r]
    expected = api.caption([r["video"] for r in good], with_scores=True)
    assert [r["caption"] for r in good] == [e["caption"] for e in expected]
    assert [r["score"] for r in good] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert "cut.mp4" in err and "empty.mp4" in err and "3 ok, 2 failed" in err


def test_exit_status_is_1_only_when_nothing_could_be_processed(built, folder, capsys, tmp_path):
    status, records, err = run_cli(capsys, "--ckpt", built.folder, "match", folder / "cut.mp4", "--text", "a")
    assert status == 1 and records == [{"video": str(folder / "cut.mp4"), "error": records[0]["error"]}]
    assert "nothing could be processed" in err
    status, records, err = run_cli(capsys, "--ckpt", tmp_path / "missing", "caption", folder)
    assert status == 1 and records == [] and "checkpoint not found" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["--ckpt", str(built.folder), "answer", str(folder)])  # --question is required
    assert exit_info.value.code == 2


def test_answer_match_and_retrieve_agree_with_the_api(built, api, folder, capsys):
    videos = [str(folder / f"demo_test_0000{i}.mp4") for i in range(3)]
    question, options = "what color is the circle?", ["red", "green", "blue"]
    argv = ["--ckpt", built.folder, "answer", *videos[:2], "--question", question]
    status, records, _ = run_cli(capsys, *argv)
    assert status == 0
    expected = api.answer(videos[:2], question, with_scores=True)
    assert [(r["question"], r["answer"]) for r in records] == [(question, e["answer"]) for e in expected]
    assert [a for a, _ in records[0]["top"]] == [a for a, _ in expected[0]["top"]]

    argv = ["answer", videos[0], "--question", question, "--options", *options, "--ckpt", built.folder]
    status, records, _ = run_cli(capsys, *argv)  # the common options may follow the command
    chosen = api.answer(videos[0], question, options, with_scores=True)
    assert status == 0 and records[0]["options"] == options
    assert (records[0]["answer"], records[0]["index"]) == (chosen["answer"], chosen["index"])

    status, records, _ = run_cli(capsys, "--ckpt", built.folder, "match", *videos, "--text", "red circles")
    assert [r["score"] for r in records] == pytest.approx(api.match(videos, "red circles"), abs=1e-5)

    texts = ["two red circles", "one blue square"]
    argv = ["--ckpt", built.folder, "retrieve", "--videos", folder, "--texts", *texts, "--top_k", "2"]
    status, records, err = run_cli(capsys, *argv)
    assert status == 0 and [Path(r["video"]).name for r in records[:2]] == ["cut.mp4", "empty.mp4"]
    ranked = api.retrieve(texts, videos, top_k=2)
    for record, text, ranking in zip(records[2:], texts, ranked):
        assert record["text"] == text
        assert [r["video"] for r in record["results"]] == [videos[j] for j, _ in ranking]
        assert [r["score"] for r in record["results"]] == pytest.approx([s for _, s in ranking], abs=1e-5)


def test_frame_tsv_rows_are_inputs_named_by_their_id(built, api, folder, capsys, tmp_path):
    videos = [str(folder / f"demo_test_0000{i}.mp4") for i in range(2)]
    extract_videos(videos, 4, tmp_path / "img_mine", ordered=True, progress=False)
    status, records, _ = run_cli(capsys, "--ckpt", built.folder, "caption", tmp_path / "img_mine.tsv")
    assert status == 0 and [r["video"] for r in records] == ["demo_test_00000", "demo_test_00001"]
    assert [r["caption"] for r in records] == api.caption(videos)


def test_the_module_runs_and_its_help_shows_examples():
    done = subprocess.run(
        [sys.executable, "-m", "lib.predict", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for example in ("caption videos/", "--question", "--options", "retrieve --videos", "match a.mp4 --text"):
        assert example in done.stdout


def test_a_tsv_with_a_stale_index_is_one_error_record_between_good_videos(built, folder, capsys, tmp_path):
    """Before: the TSVError of the stale .lineidx stopped the whole command with 0 outputs (issue #28)."""
    extract_videos([folder / "demo_test_00000.mp4"], 4, tmp_path / "img_stale", progress=False)
    lineidx = tmp_path / "img_stale.lineidx"
    lineidx.write_bytes(lineidx.read_bytes() + b"999999\n")  # the index lists a row the TSV lacks
    first, last = folder / "demo_test_00001.mp4", folder / "demo_test_00002.mp4"
    status, records, err = run_cli(
        capsys, "--ckpt", built.folder, "caption", first, tmp_path / "img_stale.tsv", last
    )
    assert status == 0 and [r["video"] for r in records] == [
        str(first),
        str(tmp_path / "img_stale.tsv"),
        str(last),
    ]
    assert "caption" in records[0] and "caption" in records[2]
    assert f"{lineidx} does not match {tmp_path / 'img_stale.tsv'}" in records[1]["error"]
    assert "2 ok, 1 failed" in err
