"""The TSV command-line tools, run as subprocesses on the reference sample and on damaged copies."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from lib.data.tsv import TSVFile, TSVWriter, frame_columns, load_id2lineidx

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("check_tsv.py", "extract_tsv.py", "make_id2lineidx_pkl.py", "visualize_frame_tsv.py")


def run_tool(tool: str, *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "_tools" / tool), *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def ref_rows(msrvtt_sample: Path) -> list[list[bytes]]:
    tsv = TSVFile(msrvtt_sample / "msrvtt.tsv")
    return [tsv.row(i) for i in range(len(tsv))]


@pytest.mark.parametrize("tool", TOOLS)
def test_help(tool: str) -> None:
    result = run_tool(tool, "--help")
    assert result.returncode == 0 and "usage:" in result.stdout


def test_check_tsv_passes_on_reference(msrvtt_sample: Path) -> None:
    result = run_tool("check_tsv.py", msrvtt_sample / "msrvtt.tsv", "--decode", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["rows"] == 10 and report["unique_ids"] == 10
    assert (report["frames_min"], report["frames_max"]) == (5, 5)
    assert report["frames_decoded"] == 50 and report["frames_undecodable"] == 0
    assert report["bad_offsets"] == [] and report["duplicate_ids"] == {}
    assert report["lineidx"].endswith("msrvtt.lineidx")


def test_check_tsv_names_broken_rows(tmp_path: Path, ref_rows: list[list[bytes]]) -> None:
    rows = [list(r) for r in ref_rows[:4]]
    rows[1][3] = rows[1][3][:2000]  # a frame cut short
    rows[3][0] = rows[0][0]  # a duplicated id
    path = tmp_path / "broken.tsv"
    path.write_bytes(b"".join(b"\t".join(r) + b"\n" for r in rows))
    result = run_tool("check_tsv.py", path, "--decode")
    assert result.returncode == 1
    assert "row 1 (id 'video7016') column 3: JPEG is truncated" in result.stdout
    assert f"id {rows[0][0].decode()!r} appears in rows [0, 3]" in result.stdout
    assert "lineidx:         none" in result.stdout  # a missing index is not a problem (readers build one)
    assert not path.with_suffix(".lineidx").exists(), "check_tsv writes nothing"


def test_check_tsv_reports_stale_lineidx(tmp_path: Path, msrvtt_sample: Path) -> None:
    path = Path(shutil.copy(msrvtt_sample / "msrvtt.tsv", tmp_path / "m.tsv"))
    offsets = (msrvtt_sample / "msrvtt.lineidx").read_text().split()
    offsets[6] = str(int(offsets[6]) + 10)
    path.with_suffix(".lineidx").write_text("\n".join(offsets[:-1]) + "\n")
    result = run_tool("check_tsv.py", path, "--json")
    assert result.returncode == 1
    bad = json.loads(result.stdout)["bad_offsets"]
    assert bad[0] == f"{path.with_suffix('.lineidx')} lists 9 rows, the TSV has 10"
    assert bad[1].startswith("row 6: index says")


def test_check_tsv_missing_file(tmp_path: Path) -> None:
    result = run_tool("check_tsv.py", tmp_path / "none.tsv")
    assert result.returncode == 2 and "TSV file not found" in result.stderr


@pytest.mark.parametrize("as_bytes", [False, True])
def test_extract_tsv_from_reference_style_pickle(tmp_path: Path, ref_rows, as_bytes: bool) -> None:
    videos = {r[0].decode(): [f if as_bytes else f.decode() for f in frame_columns(r)] for r in ref_rows[:3]}
    pkl = tmp_path / "msrvtt.pkl"
    pkl.write_bytes(pickle.dumps(videos))
    result = run_tool("extract_tsv.py", "--pkl", pkl, "--output", tmp_path / "img_msrvtt")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "img_msrvtt.lineidx",
        "img_msrvtt.tsv",
        "msrvtt.pkl",
    ]
    tsv = TSVFile(tmp_path / "img_msrvtt.tsv")
    assert [tsv.row(i) for i in range(len(tsv))] == [r for r in ref_rows[:3]]
    assert run_tool("check_tsv.py", tsv.path, "--decode").returncode == 0


def test_extract_tsv_rejects_bad_pickle(tmp_path: Path) -> None:
    pkl = tmp_path / "bad.pkl"
    pkl.write_bytes(pickle.dumps({"v1": "not a list"}))
    result = run_tool("extract_tsv.py", "--pkl", pkl, "--output", tmp_path / "out")
    assert result.returncode == 1 and "entry 'v1' is not a list" in result.stderr
    assert not (tmp_path / "out.tsv").exists()


def test_make_id2lineidx_pkl(tmp_path: Path, msrvtt_sample: Path) -> None:
    tsv_path = Path(shutil.copy(msrvtt_sample / "msrvtt.tsv", tmp_path / "img_msrvtt.tsv"))
    result = run_tool("make_id2lineidx_pkl.py", "--tsv", tsv_path)
    assert result.returncode == 0, result.stderr
    mapping = load_id2lineidx(tmp_path / "img_msrvtt.id2lineidx.pkl")
    offsets = [int(o) for o in (msrvtt_sample / "msrvtt.lineidx").read_text().split()]
    tsv = TSVFile(tsv_path)
    assert mapping == {tsv.key(i): offsets[i] for i in range(10)}
    custom = tmp_path / "sub.pkl"
    assert run_tool("make_id2lineidx_pkl.py", "--tsv", tsv_path, "--output", custom).returncode == 0
    assert load_id2lineidx(custom) == mapping


def test_make_id2lineidx_pkl_names_the_bad_row(tmp_path: Path, ref_rows) -> None:
    with TSVWriter(tmp_path / "img_bad") as w:
        w.write(ref_rows[0])
        w.write([b"video_broken", ref_rows[1][1][:3000], *ref_rows[1][2:]])
    result = run_tool("make_id2lineidx_pkl.py", "--tsv", tmp_path / "img_bad.tsv")
    assert result.returncode == 1
    assert "row 1 (id 'video_broken'): first frame is not a decodable JPEG" in result.stderr
    assert not (tmp_path / "img_bad.id2lineidx.pkl").exists()


def test_visualize_frame_tsv(tmp_path: Path, msrvtt_sample: Path) -> None:
    tsv = msrvtt_sample / "msrvtt.tsv"
    by_id = tmp_path / "by_id.png"
    result = run_tool("visualize_frame_tsv.py", "--tsv", tsv, "--id", "video7010", "--output", by_id)
    assert result.returncode == 0, result.stderr
    grid = cv2.imread(str(by_id))
    assert grid.shape == (32 + 240, 5 * 320, 3)
    by_row = tmp_path / "by_row.png"
    assert run_tool("visualize_frame_tsv.py", "--tsv", tsv, "--row", "8", "--output", by_row).returncode == 0
    assert by_row.read_bytes() == by_id.read_bytes()  # video7010 is row 8
    missing = run_tool("visualize_frame_tsv.py", "--tsv", tsv, "--id", "nope", "--output", tmp_path / "x.png")
    assert missing.returncode == 1 and "id 'nope' not found" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["by_id.png", "by_row.png"]
