"""lib.data.extract and _tools/extract_video-frame.py: rows, failures, resume, kills, the real sample."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lib.data.extract import Outcome, _outcomes, extract_videos, list_videos
from lib.data.tsv import TSVFile
from lib.data.video import reference_frame_indices

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "_tools" / "extract_video-frame.py"
GOOD = ("h264_mp4", "vp9_webm", "mpeg4_avi", "mjpeg_mkv", "vfr_mp4", "gif")


def decode_b64(b64: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def rows_by_id(tsv: Path) -> dict[str, list[bytes]]:
    table = TSVFile(tsv)
    rows = {}
    for i in range(len(table)):
        row = table.row(i)
        assert row[0].decode() not in rows, f"id {row[0]!r} twice in {tsv}"
        rows[row[0].decode()] = row[1:]
    table.close()
    return rows


def run_tool(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOL), *args], cwd=REPO, capture_output=True, text=True, timeout=120, **kwargs
    )


@pytest.fixture
def mixed_dir(tmp_path, videos, one_frame_video, broken_files, audio_only_file) -> Path:
    """Good videos of several containers, a 1-frame video, and every kind of broken file."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(videos[name], folder)
    shutil.copy(one_frame_video, folder)
    for path in broken_files.values():
        shutil.copy(path, folder)
    shutil.copy(audio_only_file, folder / "tone.mp4")  # an .mp4 holding only AAC audio
    (folder / "readme.txt").write_text("not a video suffix: ignored")
    return folder


# ------------------------------------------------------------------------------- acceptance: real sample


def test_sample_frames_match_the_reference_tsv(msrvtt_sample, tmp_path):
    summary = extract_videos(msrvtt_sample, 5, tmp_path / "msrvtt", progress=False)
    assert summary["counts"] == {"inputs": 10, "ok": 10, "failed": 0, "skipped": 0, "too_short": 0}
    ours = rows_by_id(tmp_path / "msrvtt.tsv")
    reference = rows_by_id(msrvtt_sample / "msrvtt.tsv")
    assert sorted(ours) == sorted(reference) == [f"video70{i}" for i in range(10, 20)]
    worst = min(
        psnr(decode_b64(a), decode_b64(b))
        for vid in ours
        for a, b in zip(ours[vid], reference[vid], strict=True)
    )
    assert worst >= 30.0, f"a frame is only {worst:.1f} dB from the reference's"
    assert (tmp_path / "msrvtt.lineidx").read_text().splitlines()[0] == "0"


# ---------------------------------------------------------------------------------------- outputs


def test_broken_files_are_recorded_and_never_stop_the_run(mixed_dir, tmp_path, index_code):
    prefix = tmp_path / "out" / "frames"
    summary = extract_videos(mixed_dir, 4, prefix, progress=False)
    assert summary["counts"] == {"inputs": 12, "ok": 7, "failed": 5, "skipped": 0, "too_short": 1}
    assert summary["too_short_ids"] == ["single"]
    assert summary["status"] == "complete" and summary["k"] == 4 and summary["jpeg_quality"] == 75
    assert json.loads(Path(f"{prefix}.json").read_text()) == summary

    failed = [json.loads(line) for line in Path(f"{prefix}.failed.jsonl").read_text().splitlines()]
    assert failed == summary["failures"]
    reasons = {f["id"]: f["reason"] for f in failed}
    assert sorted(reasons) == ["empty", "notes", "tone", "truncated", "truncated_faststart"]
    assert "empty file" in reasons["empty"]
    assert "not a readable media file" in reasons["notes"]
    assert "no video stream" in reasons["tone"]
    assert "truncated" in reasons["truncated_faststart"]
    assert all(Path(f["path"]).parent == mixed_dir for f in failed)

    rows = rows_by_id(Path(f"{prefix}.tsv"))
    assert sorted(rows) == ["anim", "h264", "mjpeg", "mpeg4", "single", "vfr", "vp9"]
    for vid, frames in rows.items():
        assert len(frames) == 4
        shown = [index_code.read(decode_b64(f)) for f in frames]
        if vid == "single":
            assert shown == [0, 0, 0, 0]
        else:
            assert shown == sorted(shown) and len(set(shown)) == 4

    journal = [json.loads(line) for line in Path(f"{prefix}.videos.jsonl").read_text().splitlines()]
    assert len(journal) == 12 and {r["status"] for r in journal} == {"ok", "failed"}
    single = next(r for r in journal if r["id"] == "single")
    assert single["flags"] == ["too_short"] and single["n_frames"] == 1 and single["indices"] == [0] * 4


def test_rows_hold_the_reference_picks(videos, tmp_path, index_code):
    paths = [videos[name] for name in ("h264_mp4", "mpeg2_mpg", "h264_short_gop_mp4")]
    extract_videos(paths, 5, tmp_path / "t", progress=False, ordered=True)
    table = TSVFile(tmp_path / "t.tsv")
    assert table.keys() == ["h264", "mpeg2", "h264_gop10"]
    for i, n in enumerate((90, 50, 90)):
        frames = table.row(i)[1:]
        assert [index_code.read(decode_b64(f)) for f in frames] == reference_frame_indices(n, 5)


def test_ordered_workers_write_the_same_table_as_one_worker(mixed_dir, tmp_path):
    extract_videos(mixed_dir, 3, tmp_path / "one", progress=False)
    extract_videos(mixed_dir, 3, tmp_path / "two", workers=2, ordered=True, progress=False)
    assert (tmp_path / "one.tsv").read_bytes() == (tmp_path / "two.tsv").read_bytes()
    assert (tmp_path / "one.lineidx").read_bytes() == (tmp_path / "two.lineidx").read_bytes()
    extract_videos(mixed_dir, 3, tmp_path / "any", workers=2, ordered=False, progress=False)
    assert rows_by_id(tmp_path / "any.tsv") == rows_by_id(tmp_path / "one.tsv")


def test_size_short_and_quality(videos, tmp_path):
    summary = extract_videos(
        [videos["h264_mp4"]], 2, tmp_path / "s", size_short=48, quality=90, progress=False
    )
    assert summary["size_short"] == 48 and summary["jpeg_quality"] == 90
    frames = TSVFile(tmp_path / "s.tsv").row(0)[1:]
    assert [decode_b64(f).shape for f in frames] == [(48, 64, 3)] * 2


def test_bad_settings_are_refused(videos, tmp_path):
    for kwargs, match in [
        ({"k": 0}, "k"),
        ({"k": 2, "quality": 0}, "quality"),
        ({"k": 2, "size_short": 0}, "size"),
    ]:
        with pytest.raises(ValueError, match=match):
            extract_videos([videos["h264_mp4"]], output_prefix=tmp_path / "x", progress=False, **kwargs)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        extract_videos(tmp_path / "missing", 2, tmp_path / "x", progress=False)


# ------------------------------------------------------------------------------------------ inputs


def test_list_file_relative_paths_comments_and_duplicate_ids(videos, tmp_path):
    folder = tmp_path / "a"
    folder.mkdir()
    shutil.copy(videos["h264_mp4"], folder / "clip.mp4")
    other = tmp_path / "b"
    other.mkdir()
    shutil.copy(videos["vp9_webm"], other / "clip.webm")  # same id "clip"
    shutil.copy(videos["mjpeg_mkv"], folder / "intra.mkv")
    listing = tmp_path / "list.txt"
    listing.write_text("# my videos\na/intra.mkv\n\na/clip.mp4\n" + f"{other / 'clip.webm'}\nmissing.mp4\n")
    assert list_videos(listing) == [folder / "intra.mkv", folder / "clip.mp4", other / "clip.webm",
                                    tmp_path / "missing.mp4"]  # fmt: skip
    summary = extract_videos(listing, 2, tmp_path / "l", ordered=True, progress=False)
    assert TSVFile(tmp_path / "l.tsv").keys() == ["intra", "clip"]  # list order kept
    reasons = {f["path"]: f["reason"] for f in summary["failures"]}
    assert reasons[str(other / "clip.webm")].startswith("duplicate id")
    assert reasons[str(tmp_path / "missing.mp4")] == "file not found"


def test_directory_listing_is_top_level_video_files_sorted(mixed_dir):
    names = [p.name for p in list_videos(mixed_dir)]
    assert names == sorted(names) and "readme.txt" not in names and len(names) == 12


# ------------------------------------------------------------------------------------------ resume


def test_rerun_skips_written_ids_and_retries_failures(videos, tmp_path):
    folder = tmp_path / "v"
    folder.mkdir()
    for name in ("h264_mp4", "vp9_webm"):
        shutil.copy(videos[name], folder)
    (folder / "late.mp4").write_bytes(b"")  # fails now, gets fixed before the re-run
    first = extract_videos(folder, 3, tmp_path / "r", progress=False)
    assert first["counts"]["ok"] == 2 and first["counts"]["failed"] == 1
    shutil.copy(videos["mpeg4_avi"], folder / "late.avi")
    (folder / "late.mp4").unlink()
    shutil.copy(videos["mjpeg_mkv"], folder)
    second = extract_videos(folder, 3, tmp_path / "r", progress=False)
    assert second["counts"] == {"inputs": 4, "ok": 2, "failed": 0, "skipped": 2, "too_short": 0}
    assert sorted(rows_by_id(tmp_path / "r.tsv")) == ["h264", "late", "mjpeg", "vp9"]
    assert (tmp_path / "r.failed.jsonl").read_text() == ""
    with pytest.raises(ValueError, match="k=3.*k=4"):
        extract_videos(folder, 4, tmp_path / "r", progress=False)


def test_kill_and_resume_gives_every_id_once_with_identical_frames(videos, hd_video, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for name in GOOD:
        shutil.copy(videos[name], folder)
    for i in range(16):  # enough 720p work that the run is still going when the first rows are out
        os.symlink(hd_video, folder / f"hd_{i:02d}.mp4")
    expected = extract_videos(folder, 5, tmp_path / "clean" / "f", ordered=True, progress=False)
    clean = rows_by_id(tmp_path / "clean" / "f.tsv")

    prefix = tmp_path / "killed" / "f"
    inprogress = Path(f"{prefix}.tsv.inprogress")
    args = ("--path", str(folder), "--sample", "5", "--output", str(prefix), "--quiet")
    process = subprocess.Popen([sys.executable, str(TOOL), *args], cwd=REPO)
    deadline = time.time() + 60
    while time.time() < deadline and not (inprogress.exists() and inprogress.read_bytes().count(b"\n") >= 2):
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not Path(f"{prefix}.tsv").exists(), "the run finished before it could be killed"
    written = inprogress.read_bytes().count(b"\n")
    assert 2 <= written < len(clean)
    with open(inprogress, "ab") as f:  # a row torn by the kill
        f.write(b"hd_15\t/9j/4AAQSkZJRgABAQAAAQABAAD")

    result = run_tool(*args)
    assert result.returncode == 0, result.stderr
    resumed = rows_by_id(Path(f"{prefix}.tsv"))  # asserts every id once
    assert resumed == clean
    summary = json.loads(Path(f"{prefix}.json").read_text())
    assert summary["counts"]["skipped"] == written and summary["rows"] == expected["rows"] == 22
    lines = Path(f"{prefix}.tsv").read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(len(line.split(b"\t")) == 6 for line in lines[:-1])


def crash_on_request(job: str) -> Outcome:
    """A worker that dies the way a segfaulting decoder does, for jobs named 'crash…'."""
    if Path(job).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGKILL)
    return Outcome(Path(job).stem, job, "ok", n_frames=1)


@pytest.mark.parametrize("ordered", [True, False])
def test_a_worker_process_crash_fails_only_its_video(ordered):
    jobs = [f"/videos/v{i}.mp4" for i in range(7)]
    jobs.insert(3, "/videos/crash.mp4")
    outcomes = list(_outcomes(jobs, crash_on_request, workers=2, ordered=ordered))
    assert sorted(o.path for o in outcomes) == sorted(jobs)
    if ordered:
        assert [o.path for o in outcomes] == jobs
    failed = [o for o in outcomes if o.status == "failed"]
    assert [o.id for o in failed] == ["crash"] and "process died" in failed[0].reason


# --------------------------------------------------------------------------------------------- CLI


def test_cli_exit_codes(videos, mixed_dir, tmp_path):
    assert run_tool("--help").returncode == 0
    assert run_tool("--path", str(mixed_dir), "--output", str(tmp_path / "x")).returncode == 2  # no --sample
    assert (
        run_tool(
            "--path", str(tmp_path / "nope"), "--sample", "2", "--output", str(tmp_path / "x")
        ).returncode
        == 2
    )
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    result = run_tool("--path", str(empty), "--sample", "2", "--output", str(tmp_path / "x"))
    assert result.returncode == 2 and "no videos" in result.stderr

    some_bad = run_tool("--path", str(mixed_dir), "--sample", "2", "--output", str(tmp_path / "m"), "--quiet")
    assert some_bad.returncode == 1
    assert "5 failed" in some_bad.stdout and "empty file" in some_bad.stderr
    assert len(TSVFile(tmp_path / "m.tsv")) == 7

    good = tmp_path / "good"
    good.mkdir()
    shutil.copy(videos["h264_mp4"], good)
    ok = run_tool("--path", str(good), "--sample", "3", "--output", str(tmp_path / "g"), "--workers", "2")
    assert ok.returncode == 0, ok.stderr
    assert run_tool("--path", str(good), "--sample", "3", "--output", str(tmp_path / "g")).returncode == 0
    clash = run_tool("--path", str(good), "--sample", "4", "--output", str(tmp_path / "g"))
    assert clash.returncode == 2 and "k=3" in clash.stderr
