"""TSVFile / TSVWriter / MultiTSV / id2lineidx on the reference msrvtt.tsv and on files written here."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.data.tsv import (
    MultiTSV,
    TSVError,
    TSVFile,
    TSVWriter,
    build_lineidx,
    frame_columns,
    load_id2lineidx,
    read_lineidx,
    save_id2lineidx,
    scan_row_offsets,
    shard_paths,
)
from lib.data.tsv_check import build_id2lineidx

REPO = Path(__file__).resolve().parents[2]
REFERENCE_OFFSETS = [0, 88495, 161082, 251897, 323496, 418679, 462762, 506985, 588700, 685583]
REFERENCE_IDS = {f"video{n}" for n in range(7010, 7020)}


@pytest.fixture
def ref_copy(msrvtt_sample: Path, tmp_path: Path) -> Path:
    """The reference TSV copied WITHOUT its .lineidx (the shared folder is never written)."""
    return Path(shutil.copy(msrvtt_sample / "msrvtt.tsv", tmp_path / "msrvtt.tsv"))


def synthetic_row(i: int) -> list[str]:
    """Row ``i`` of the synthetic files: its content is a function of ``i``, so any row can be checked."""
    return [f"vid{i:05d}", f"meta{i}", *(f"/9j/{i:05d}{'x' * (i % 7)}{k}" for k in range(3))]


# ---------------------------------------------------------------------------------------------- reader


def test_reads_reference_tsv_with_its_lineidx(msrvtt_sample: Path) -> None:
    tsv = TSVFile(msrvtt_sample / "msrvtt.tsv")
    assert len(tsv) == 10
    assert isinstance(tsv.offsets, np.ndarray) and tsv.offsets.dtype == np.int64
    assert tsv.offsets.tolist() == REFERENCE_OFFSETS
    assert tsv.lineidx_path == msrvtt_sample / "msrvtt.lineidx"
    assert set(tsv.keys()) == REFERENCE_IDS
    for i in range(len(tsv)):
        row = tsv.row(i)
        assert len(row) == 6 and row[0].decode() == tsv.key(i)
        frames = frame_columns(row)
        assert len(frames) == 5 and all(f.startswith(b"/9j/") for f in frames)
        assert not row[-1].endswith(b"\n")
    assert tsv.index_of("video7010") == 8
    assert tsv.row(-1) == tsv.row(9)
    assert tsv.row_at_offset(REFERENCE_OFFSETS[3]) == tsv.row(3)


def test_missing_lineidx_is_built_atomically(ref_copy: Path, msrvtt_sample: Path) -> None:
    lineidx = ref_copy.with_suffix(".lineidx")
    assert not lineidx.exists()
    tsv = TSVFile(ref_copy)
    assert not lineidx.exists(), "opening must be lazy"
    assert len(tsv) == 10
    assert lineidx.read_bytes() == (msrvtt_sample / "msrvtt.lineidx").read_bytes()
    assert sorted(p.name for p in ref_copy.parent.iterdir()) == ["msrvtt.lineidx", "msrvtt.tsv"]
    assert TSVFile(ref_copy).row(4) == TSVFile(msrvtt_sample / "msrvtt.tsv").row(4)


def test_lineidx_8b_is_accepted(ref_copy: Path) -> None:
    eight = Path(str(ref_copy.with_suffix(".lineidx")) + ".8b")
    eight.write_bytes(np.array(REFERENCE_OFFSETS, dtype="<i8").tobytes())
    tsv = TSVFile(ref_copy)
    assert tsv.offsets.tolist() == REFERENCE_OFFSETS
    assert tsv.lineidx_path == eight
    assert not ref_copy.with_suffix(".lineidx").exists()


def _write_lineidx(tsv: Path, offsets: list[int]) -> None:
    tsv.with_suffix(".lineidx").write_text("".join(f"{o}\n" for o in offsets))


@pytest.mark.parametrize(
    "offsets, reason",
    [
        (REFERENCE_OFFSETS[:-1] + [800_000], "past the end"),
        (REFERENCE_OFFSETS[:4] + [REFERENCE_OFFSETS[4] + 3] + REFERENCE_OFFSETS[5:], "not at the start"),
        (REFERENCE_OFFSETS[:-1], "continues after the last indexed row"),
        (REFERENCE_OFFSETS[:3] + REFERENCE_OFFSETS[2:], "do not increase"),
        ([5] + REFERENCE_OFFSETS[1:], "not 0"),
    ],
)
def test_stale_lineidx_raises_naming_file_and_fix(ref_copy: Path, offsets: list[int], reason: str) -> None:
    _write_lineidx(ref_copy, offsets)
    with pytest.raises(TSVError) as err:
        len(TSVFile(ref_copy))
    message = str(err.value)
    assert reason in message and str(ref_copy) in message
    assert "delete" in message and "check_tsv.py" in message


def test_tsv_appended_after_indexing_is_detected(ref_copy: Path, msrvtt_sample: Path) -> None:
    shutil.copy(msrvtt_sample / "msrvtt.lineidx", ref_copy.with_suffix(".lineidx"))
    with open(ref_copy, "ab") as f:
        f.write(b"video9999\t/9j/abc\n")
    with pytest.raises(TSVError, match="more rows than the 10 indexed"):
        len(TSVFile(ref_copy))


def test_garbage_lineidx_and_recovery_by_deleting(ref_copy: Path) -> None:
    ref_copy.with_suffix(".lineidx").write_text("0\nnot-a-number\n")
    with pytest.raises(TSVError, match="line 2 is not a byte offset"):
        len(TSVFile(ref_copy))
    ref_copy.with_suffix(".lineidx").unlink()
    assert TSVFile(ref_copy).offsets.tolist() == REFERENCE_OFFSETS


def test_errors_name_the_file(ref_copy: Path) -> None:
    tsv = TSVFile(ref_copy)
    with pytest.raises(KeyError, match="video0000.*msrvtt.tsv"):
        tsv.index_of("video0000")
    with pytest.raises(IndexError, match="row 10 out of range"):
        tsv.row(10)
    with pytest.raises(TSVError, match="no row starts at byte 17"):
        tsv.row_at_offset(17)
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        TSVFile(ref_copy.parent / "nope.tsv")


def test_offsets_scan_edge_cases(tmp_path: Path) -> None:
    cases = {b"": [], b"a\tb": [0], b"a\tb\n": [0], b"a\n\nbb\nc": [0, 2, 3, 6], b"\n": [0]}
    for k, (data, expected) in enumerate(cases.items()):
        path = tmp_path / f"c{k}.tsv"
        path.write_bytes(data)
        assert scan_row_offsets(path).tolist() == expected
        assert build_lineidx(path).tolist() == expected
        assert read_lineidx(path.with_suffix(".lineidx")).tolist() == expected
        assert len(TSVFile(path)) == len(expected)
    last = TSVFile(tmp_path / "c1.tsv")
    assert last.row(0) == [b"a", b"b"] and last.key(0) == "a"


def test_crlf_rows_and_long_key(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    long_key = "k" * 600
    path.write_bytes(b"a\t1\r\n" + long_key.encode() + b"\t2\r\n" + long_key.encode() + b"z\n")
    tsv = TSVFile(path)
    assert tsv.row(0) == [b"a", b"1"] and tsv.key(1) == long_key and tsv.key(2) == long_key + "z"


def test_both_layouts_and_explicit_frame_col(msrvtt_sample: Path) -> None:
    row = TSVFile(msrvtt_sample / "msrvtt.tsv").row(0)
    with_meta = [row[0], b"5", *row[1:]]
    assert frame_columns(row) == row[1:]
    assert frame_columns(with_meta) == row[1:]
    assert frame_columns(with_meta, frame_col=3) == row[2:]
    assert frame_columns([r.decode() for r in row]) == [r.decode() for r in row[1:]]
    with pytest.raises(TSVError, match="no base64 JPEG"):
        frame_columns([b"id", b"meta", b"iVBORw0KGgo"])
    with pytest.raises(TSVError, match="frame_col=9"):
        frame_columns(row, frame_col=9)


class _RowDataset(torch.utils.data.Dataset):
    def __init__(self, tsv: TSVFile):
        self.tsv = tsv

    def __len__(self) -> int:
        return len(self.tsv)

    def __getitem__(self, i: int) -> dict:
        row = self.tsv.row(i)
        return {
            "key": self.tsv.key(i),
            "size": sum(map(len, row)),
            "pid": os.getpid(),
            "fd_pid": self.tsv._pid,
        }


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_reopen_the_file(msrvtt_sample: Path, workers: int) -> None:
    tsv = TSVFile(msrvtt_sample / "msrvtt.tsv")
    expected = [(tsv.key(i), sum(map(len, tsv.row(i)))) for i in range(len(tsv))]  # opened in the parent
    loader = torch.utils.data.DataLoader(
        _RowDataset(tsv),
        batch_size=None,
        num_workers=workers,
        multiprocessing_context="fork" if workers else None,
    )
    items = list(loader)
    assert [(it["key"], it["size"]) for it in items] == expected
    assert all(it["fd_pid"] == it["pid"] for it in items), "each process must read through its own descriptor"
    pids = {it["pid"] for it in items}
    assert pids == {os.getpid()} if workers == 0 else (len(pids) == 2 and os.getpid() not in pids)


def test_pickled_reader_reopens(msrvtt_sample: Path) -> None:
    tsv = TSVFile(msrvtt_sample / "msrvtt.tsv")
    tsv.row(0)
    clone = pickle.loads(pickle.dumps(tsv))
    assert clone._fd is None and clone.row(7) == tsv.row(7)
    assert clone.offsets is not tsv.offsets and clone.offsets.tolist() == REFERENCE_OFFSETS


# ---------------------------------------------------------------------------------------------- writer


def _assert_consistent(tsv_path: Path, n_rows: int) -> None:
    tsv = TSVFile(tsv_path)
    assert len(tsv) == n_rows
    assert tsv.offsets.tolist() == scan_row_offsets(tsv_path).tolist()
    for i in range(n_rows):
        assert tsv.row(i) == [c.encode() for c in synthetic_row(i)]


def test_writer_round_trip_in_write_order(tmp_path: Path) -> None:
    prefix = tmp_path / "out" / "img_demo"
    with TSVWriter(prefix) as w:
        for i in (3, 0, 2):
            w.write(synthetic_row(i) if i != 2 else [c.encode() for c in synthetic_row(i)])
        assert not Path(str(prefix) + ".tsv").exists(), "final name appears only on close"
        assert Path(str(prefix) + ".tsv.inprogress").exists()
        assert Path(str(prefix) + ".lineidx.inprogress").exists()
        assert w.keys_written() == {"vid00003", "vid00000", "vid00002"} and len(w) == 3
    assert sorted(p.name for p in prefix.parent.iterdir()) == ["img_demo.lineidx", "img_demo.tsv"]
    tsv = TSVFile(str(prefix) + ".tsv")
    assert tsv.keys() == ["vid00003", "vid00000", "vid00002"]
    assert tsv.row(2) == [c.encode() for c in synthetic_row(2)]
    assert tsv.offsets.tolist() == scan_row_offsets(tsv.path).tolist()


def test_writer_rejects_bad_columns(tmp_path: Path) -> None:
    w = TSVWriter(tmp_path / "bad.tsv")
    w.write(["a", "1"])
    for columns, match in [
        (["b", "x\ty"], "column 1 contains a tab"),
        (["c", "x\ny"], "column 1 contains a tab or newline"),
        (["a", "2"], "'a' was already written"),
        ([], "no columns"),
        (["", "1"], "empty id"),
    ]:
        with pytest.raises(ValueError, match=match):
            w.write(columns)
    w.close()
    assert TSVFile(tmp_path / "bad.tsv").keys() == ["a"]


def test_exception_keeps_inprogress_and_resume_continues(tmp_path: Path) -> None:
    prefix = tmp_path / "part"
    with pytest.raises(RuntimeError), TSVWriter(prefix) as w:
        for i in range(4):
            w.write(synthetic_row(i))
        raise RuntimeError("crash")
    assert not (tmp_path / "part.tsv").exists() and (tmp_path / "part.tsv.inprogress").exists()
    with TSVWriter(prefix, resume=True) as w:
        assert w.keys_written() == {f"vid{i:05d}" for i in range(4)}
        for i in range(4, 6):
            w.write(synthetic_row(i))
    _assert_consistent(tmp_path / "part.tsv", 6)


_TORN_ROW_SCRIPT = """
import os, signal, sys
from lib.data.tsv import TSVWriter

def synthetic_row(i):
    return [f"vid{i:05d}", f"meta{i}", *(f"/9j/{i:05d}{'x' * (i % 7)}{k}" for k in range(3))]

w = TSVWriter(sys.argv[1])
for i in range(5):
    w.write(synthetic_row(i))
w.flush()
with open(w.tsv_inprogress, "ab") as f:  # half of row 5 reaches the disk, then the process dies
    f.write("\\t".join(synthetic_row(5)).encode()[:11])
os.kill(os.getpid(), signal.SIGKILL)
"""

_ENDLESS_WRITER_SCRIPT = """
import sys
from lib.data.tsv import TSVWriter

w = TSVWriter(sys.argv[1])
i = 0
while True:  # ~100 KB rows through a buffered file: the kill lands inside a row
    w.write([f"vid{i:05d}", str(i) * (100_000 // len(str(i)))])
    i += 1
"""


def test_resume_after_kill_with_torn_row(tmp_path: Path) -> None:
    prefix = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", _TORN_ROW_SCRIPT, str(prefix)], cwd=REPO, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed.tsv").exists()
    assert (tmp_path / "killed.tsv.inprogress").read_bytes().endswith(b"vid00005\tme")
    with TSVWriter(prefix, resume=True) as w:
        assert w.keys_written() == {f"vid{i:05d}" for i in range(5)}
        for i in range(5, 8):
            w.write(synthetic_row(i))
    _assert_consistent(tmp_path / "killed.tsv", 8)


def test_resume_after_sigkill_mid_write(tmp_path: Path) -> None:
    prefix = tmp_path / "stream"
    proc = subprocess.Popen([sys.executable, "-c", _ENDLESS_WRITER_SCRIPT, str(prefix)], cwd=REPO)
    inprogress = tmp_path / "stream.tsv.inprogress"
    deadline = time.monotonic() + 60
    while not (inprogress.exists() and inprogress.stat().st_size > 3_000_000) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with TSVWriter(prefix, resume=True) as w:
        n_kept = len(w)
        assert n_kept >= 20 and w.keys_written() == {f"vid{i:05d}" for i in range(n_kept)}
        w.write(["extra", "1"])
    tsv = TSVFile(tmp_path / "stream.tsv")
    assert len(tsv) == n_kept + 1 and tsv.offsets.tolist() == scan_row_offsets(tsv.path).tolist()
    for i in range(n_kept):
        key, payload = tsv.row(i)
        assert key == f"vid{i:05d}".encode() and payload == (str(i) * (100_000 // len(str(i)))).encode()
    assert tsv.row(n_kept) == [b"extra", b"1"]


def test_resume_reopens_a_finished_file_and_fresh_start_discards(tmp_path: Path) -> None:
    prefix = tmp_path / "done"
    with TSVWriter(prefix) as w:
        w.write(synthetic_row(0))
    with TSVWriter(prefix, resume=True) as w:
        assert w.keys_written() == {"vid00000"}
        w.write(synthetic_row(1))
    _assert_consistent(tmp_path / "done.tsv", 2)
    TSVWriter(prefix).abandon()  # an abandoned attempt...
    with TSVWriter(prefix) as w:  # ...is discarded by a fresh (non-resume) writer
        assert len(w) == 0
        w.write(synthetic_row(0))
    _assert_consistent(tmp_path / "done.tsv", 1)


# ---------------------------------------------------------------------------------- shards, id2lineidx


def test_multitsv_over_numbered_shards(tmp_path: Path) -> None:
    sizes = [3, 0, 2, 1, 1, 1, 1, 1, 1, 1, 4, 2]  # 12 shards: numeric order matters (2 < 10)
    i = 0
    for k, size in enumerate(sizes):
        with TSVWriter(tmp_path / f"webvid_train_{k}") as w:
            for _ in range(size):
                w.write(synthetic_row(i))
                i += 1
    paths = shard_paths(tmp_path, "webvid_train")
    assert [p.name for p in paths] == [f"webvid_train_{k}.tsv" for k in range(12)]
    multi = MultiTSV(paths)
    assert len(multi) == sum(sizes) == i
    assert [multi.key(j) for j in range(len(multi))] == [f"vid{j:05d}" for j in range(i)] == multi.keys()
    assert multi.row(5) == [c.encode() for c in synthetic_row(5)]
    assert multi.locate(5) == (3, 0) and multi.locate(-1) == (11, 1)
    assert multi.index_of("vid00017") == 17
    with pytest.raises(IndexError):
        multi.row(i)
    with pytest.raises(KeyError, match="not found in 12 TSV files"):
        multi.index_of("missing")
    (tmp_path / "webvid_train_4.tsv").unlink()
    with pytest.raises(TSVError, match=r"missing numbers \[4\]"):
        shard_paths(tmp_path, "webvid_train")


def test_id2lineidx_round_trip_and_row_by_offset(ref_copy: Path) -> None:
    tsv = TSVFile(ref_copy)
    mapping = build_id2lineidx(tsv)
    assert mapping == {tsv.key(i): REFERENCE_OFFSETS[i] for i in range(10)}
    pkl = ref_copy.with_name("img_msrvtt.id2lineidx.pkl")
    save_id2lineidx(mapping, pkl)
    loaded = load_id2lineidx(pkl)
    assert loaded == mapping
    assert tsv.row_at_offset(loaded["video7013"])[0] == b"video7013"


def test_id2lineidx_uses_stems_and_rejects_bad_pickles(tmp_path: Path, msrvtt_sample: Path) -> None:
    frame = TSVFile(msrvtt_sample / "msrvtt.tsv").row(0)[1]
    with TSVWriter(tmp_path / "img_x") as w:
        w.write(["clips/a.mp4", "meta", frame])
        w.write(["b.avi", "meta", frame])
    tsv = TSVFile(tmp_path / "img_x.tsv")
    assert build_id2lineidx(tsv) == {"a": 0, "b": len(b"clips/a.mp4\tmeta\t\n") + len(frame)}
    bad = tmp_path / "bad.pkl"
    for obj, match in [([1, 2], "expected a dict"), ({"a": "x"}, "not an id"), ({"a": -1}, "not an id")]:
        bad.write_bytes(pickle.dumps(obj))
        with pytest.raises(TSVError, match=match):
            load_id2lineidx(bad)
    bad.write_bytes(pickle.dumps({"a": Path("x")}))
    with pytest.raises(TSVError, match="unexpected object"):
        load_id2lineidx(bad)
    bad.write_bytes(b"not a pickle")
    with pytest.raises(TSVError, match="not a readable pickle"):
        load_id2lineidx(bad)


def test_id2lineidx_names_an_undecodable_first_frame(tmp_path: Path) -> None:
    with TSVWriter(tmp_path / "img_y") as w:
        w.write(["ok", "/9j/" + "A" * 8])
    with pytest.raises(TSVError, match=r"row 0 \(id 'ok'\): first frame is not a decodable JPEG"):
        build_id2lineidx(TSVFile(tmp_path / "img_y.tsv"))
