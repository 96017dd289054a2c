"""The extractor never stops a whole run for one bad input, reports what it cannot read, and its workers die
with it (issue #28, item 3); the reference's preprocessing commands work as written (item 4)."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lib.data.tsv import TSVFile, load_id2lineidx

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / "_tools"


def tool(name: str, *args, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS / name), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=180,
    )


def table_ids(tsv: Path) -> list[str]:
    with TSVFile(tsv) as table:
        return table.keys()


def failures(prefix: Path) -> dict[str, str]:
    lines = Path(f"{prefix}.failed.jsonl").read_text().splitlines()
    return {Path(r["path"]).name: r["reason"] for r in map(json.loads, lines)}


def test_names_with_a_tab_or_a_newline_fail_alone_and_later_videos_are_extracted(videos, tmp_path):
    """Before: the first such name stopped the run (exit 2) at that file, on every re-run."""
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("a.mp4", "b\tc.mp4", "d\ne.mp4", "z.mp4"):
        shutil.copy(videos["h264_short_gop_mp4"], folder / name)
    for attempt in range(2):  # a re-run skips what is done and fails the same two again
        done = tool(
            "extract_video-frame.py", "--path", folder, "--sample", "3", "--output", tmp_path / "x", "--quiet"
        )
        assert done.returncode == 1, done.stderr
        assert table_ids(tmp_path / "x.tsv") == ["a", "z"]
        reasons = failures(tmp_path / "x")
        assert set(reasons) == {"b\tc.mp4", "d\ne.mp4"}
        assert all("contains a tab or a line break" in r for r in reasons.values())
        assert f"{2 * attempt} already done, 2 failed" in done.stdout


def test_folders_named_like_videos_and_broken_symlinks_are_reported(videos, tmp_path):
    """Before: silently skipped."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(videos["h264_short_gop_mp4"], folder / "good.mp4")
    (folder / "folder.mp4").mkdir()
    (folder / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    (folder / "linked.mp4").symlink_to(folder / "good.mp4")  # a working link is a video
    done = tool(
        "extract_video-frame.py", "--path", folder, "--sample", "3", "--output", tmp_path / "x", "--quiet"
    )
    assert done.returncode == 1
    assert sorted(table_ids(tmp_path / "x.tsv")) == ["good", "linked"]
    assert failures(tmp_path / "x") == {
        "dangling.mp4": f"a dangling symlink (to {tmp_path / 'gone.mp4'})",
        "folder.mp4": "a folder named like a video file",
        "loop.mp4": "a symlink loop",
    }
    for name in ("dangling.mp4", "folder.mp4", "loop.mp4"):
        assert f"failed: {folder / name}" in done.stderr
    summary = json.loads((tmp_path / "x.json").read_text())
    assert summary["counts"] == {"inputs": 5, "ok": 2, "failed": 3, "skipped": 0, "too_short": 0}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe to keep a worker busy")
def test_killing_the_extractor_ends_its_workers(tmp_path):
    """Before: with --workers 2, the worker processes (and the fork server) outlived a killed extractor."""
    fifo = tmp_path / "never.mp4"
    os.mkfifo(fifo)  # opening it blocks: a worker stays busy with it until it is killed
    listing = tmp_path / "list.txt"
    listing.write_text(f"{fifo}\n")
    command = [sys.executable, str(TOOLS / "extract_video-frame.py"), "--path", str(listing), "--sample", "3",
               "--output", str(tmp_path / "x"), "--workers", "2", "--quiet"]  # fmt: skip
    extractor = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    descendants: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            "forkserver" in " ".join(p.cmdline()) and p.ppid() != extractor.pid for p in descendants
        ):  # wait for a worker: a child of the fork server
            time.sleep(0.2)
            descendants = psutil.Process(extractor.pid).children(recursive=True)
        assert len(descendants) >= 2, "no worker process started"
        extractor.send_signal(signal.SIGKILL)
        extractor.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=15)
        assert alive == [], [p.cmdline()[-1][:80] for p in alive]
    finally:
        for process in descendants:  # never leave one behind, whatever happened
            if process.is_running():
                process.kill()
        if extractor.poll() is None:
            extractor.kill()


# ------------------------------------------------------------------------- the reference's commands


def test_reference_preprocessing_commands_work_as_written(msrvtt_sample, tmp_path):
    """Before: each exited 2 (unknown or missing flags)."""
    work = tmp_path / "_tools"  # where the reference runs them
    (work / "_msrvtt").mkdir(parents=True)
    for name in ("video7010.mp4", "video7011.mp4", "video7012.mp4"):
        shutil.copy(msrvtt_sample / name, work / "_msrvtt" / name)

    done = tool("extract_video-frame.py", "--path=msrvtt", "--sample=5", cwd=work)
    assert done.returncode == 0, done.stderr
    with open(work / "msrvtt.pkl", "rb") as f:
        frames = pickle.load(f)
    assert sorted(frames) == ["video7010", "video7011", "video7012"]
    assert all(
        len(v) == 5 and all(isinstance(b, str) and b.startswith("/9j/") for b in v) for v in frames.values()
    )

    (work / "msrvtt.tsv").unlink()  # the reference's second step makes the table from the pickle
    (work / "msrvtt.lineidx").unlink()
    done = tool("extract_tsv.py", "--path=msrvtt", cwd=work)
    assert done.returncode == 0, done.stderr
    with TSVFile(work / "msrvtt.tsv") as table:
        assert {table.key(i): [c.decode() for c in table.row(i)[1:]] for i in range(len(table))} == frames
    offsets = [int(x) for x in (work / "msrvtt.lineidx").read_text().split()]
    assert offsets[0] == 0 and len(offsets) == 3

    done = tool(
        "make_id2lineidx_pkl.py",
        "--input_file",
        "msrvtt.tsv",
        "--output_file",
        "img.id2lineidx.pkl",
        cwd=work,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(load_id2lineidx(work / "img.id2lineidx.pkl").values()) == offsets

    done = tool("visualize_frame_tsv.py", "--input_file", "msrvtt.tsv", cwd=work)
    assert done.returncode == 0, done.stderr
    first = table_ids(work / "msrvtt.tsv")[0]
    written = sorted(p.name for p in (work / "_prepro" / "debug").iterdir())
    assert written == [f"{first}_{k}.jpg" for k in range(5)]
    assert (work / "_prepro" / "debug" / f"{first}_0.jpg").read_bytes()[:2] == b"\xff\xd8"

    missing = tool("extract_video-frame.py", "--path=msvd", "--sample=5", cwd=work)
    assert missing.returncode == 2 and "_msvd/ does not exist" in missing.stderr


def test_the_leak_filter_takes_the_reference_flags_and_drops_videos_without_frames(tmp_path):
    data = tmp_path / "_datasets"
    data.mkdir()
    retrieval = {
        "train": [{"video": v, "caption": f"about {v}"} for v in ("v1", "v2", "v3", "v4", "v4")],
        "val": [{"video": "v1", "caption": "x"}],
    }
    (data / "txt_fam-retrieval.json").write_text(json.dumps(retrieval))
    (data / "img_fam.id2lineidx.pkl").write_bytes(pickle.dumps({"v1": 0, "v2": 10, "v3": 20}))  # no v4 frames
    (data / "MSRVTT-v2").mkdir()
    out = tmp_path / "out"
    done = tool("multi_task_vid_filter.py", "--dataset", "fam", "--data_root", data, "--output_folder", out)
    assert done.returncode == 0, done.stderr
    kept = json.loads((out / "txt_fam-retrieval.json").read_text())["train"]
    assert [item["video"] for item in kept] == ["v2", "v3"]
    assert "fam: 1 val/test videos, 3 train items removed (2 without frames" in done.stdout
    assert "without frames: v4" in done.stdout
    (report,) = json.loads((out / "leak_filter_report.json").read_text())
    assert report["n_no_frames_items"] == 2 and report["frames"] == str(data / "img_fam.id2lineidx.pkl")
    assert report["files"][0]["no_frames_ids"] == ["v4"] and report["files"][0]["removed_ids"] == ["v1"]
