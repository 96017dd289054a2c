"""Silently wrong data out of the TSV store (issue #28, item 2): a row cut between frames, a duplicated id, a
file without its final newline and a JPEG whose base64 is valid but whose data libjpeg finds corrupt (it only
printed "Corrupt JPEG data" and served the image). ``check_tsv.py`` flags them; the loader names file, row
and frame, or skips and counts under ``on_bad_item: skip``. Rows: the reference's real MSR-VTT frames."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lib.data.datasets import BadClipError, ClipDataset, VideoStore, stack_clips
from lib.data.frames import ClipTransform, decode_jpeg
from lib.data.tsv import TSVFile, TSVWriter

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rows(msrvtt_sample: Path) -> list[list[bytes]]:
    with TSVFile(msrvtt_sample / "msrvtt.tsv") as tsv:
        return [tsv.row(i) for i in range(len(tsv))]


def corrupt(b64: bytes) -> bytes:
    """The same JPEG with bytes of its entropy-coded data flipped: valid base64, SOI and EOI in place."""
    data = bytearray(base64.b64decode(b64))
    start = data.find(b"\xff\xda") + 40  # inside the scan, after the start-of-scan header
    for i in range(start, start + 200):
        data[i] ^= 0x5A
    return base64.b64encode(bytes(data))


def write_tsv(path: Path, rows: list[list[bytes]]) -> Path:
    with TSVWriter(path) as writer:
        for row in rows:
            writer.write(row)
    return path.with_suffix(".tsv")


def check(path: Path, *args: str) -> tuple[int, dict]:
    done = subprocess.run(
        [sys.executable, str(REPO / "_tools" / "check_tsv.py"), str(path), "--json", *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


def test_libjpeg_corruption_is_a_decode_error(rows):
    good = rows[0][1]
    assert decode_jpeg(good).shape == (240, 320, 3)
    with pytest.raises(ValueError, match=r"JPEG data is corrupt \(libjpeg: Corrupt JPEG data"):
        decode_jpeg(corrupt(good))


def test_check_tsv_flags_short_rows_duplicates_a_missing_newline_and_corrupt_jpegs(tmp_path, rows):
    damaged = [list(r) for r in rows[:6]]
    damaged[2] = damaged[2][:-1]  # cut between frames: 4 of 5
    damaged[4][0] = damaged[1][0]  # the id of row 1 again
    damaged[5][3] = corrupt(damaged[5][3])  # frame 2 of row 5
    path = tmp_path / "damaged.tsv"
    path.write_bytes(b"".join(b"\t".join(r) + b"\n" for r in damaged)[:-1])  # no final newline
    ids = [r[0].decode() for r in damaged]
    code, report = check(path, "--decode")
    assert code == 1 and not report["ok"]
    problems = "\n".join(report["problems"])
    assert (
        "1 rows have fewer frames than the 5 most rows have" in problems
        and f"row 2 (id {ids[2]!r})" in problems
    )
    assert report["short_rows"] == [f"row 2 (id {ids[2]!r}): 4 frames"]
    assert f"id {ids[1]!r} appears in rows [1, 4] (readers use the first)" in problems
    assert "the last row (row 5) has no final newline" in problems
    assert report["frames_undecodable"] == 1
    (bad,) = report["undecodable_frames"]
    assert bad.startswith(f"row 5 (id {ids[5]!r}) column 3: JPEG data is corrupt (libjpeg: Corrupt JPEG")
    code, report = check(path)  # without --decode: the structure alone
    assert code == 1 and report["frames_undecodable"] == 0 and len(report["problems"]) == 3


def row_ids(rows) -> list[str]:
    return [r[0].decode() for r in rows[:6]]


@pytest.fixture
def damaged_store(tmp_path, rows) -> VideoStore:
    damaged = [list(r) for r in rows[:6]]
    damaged[2] = damaged[2][:-1]
    damaged[4][2] = corrupt(damaged[4][2])
    return VideoStore(write_tsv(tmp_path / "img_x", damaged))


def test_the_loader_names_file_row_and_frame(damaged_store, rows):
    ids = row_ids(rows)
    transform = ClipTransform(32, train=False, mode="img_center_crop", normalize=False)
    path = damaged_store.paths[0]
    assert damaged_store.clip(ids[0], 5, transform).shape == (5, 3, 32, 32)
    with pytest.raises(
        BadClipError, match=rf"{path} row 2 \(video '{ids[2]}'\): 4 frames where the table's rows have 5"
    ):
        damaged_store.clip(ids[2], 5, transform)  # before: 4 of 5 frames, silently
    with pytest.raises(
        BadClipError, match=rf"{path} row 4 \(video '{ids[4]}'\): frame 1 of 5: JPEG data is corrupt"
    ):
        damaged_store.clip(ids[4], 5, transform)


class Record:
    def __init__(self, video: str):
        self.video = video


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_counts_bad_items_across_loader_workers(damaged_store, rows, workers):
    ids = row_ids(rows)
    transform = ClipTransform(32, train=True, mode="img_rand_crop", normalize=False)
    records = [Record(video) for video in ids]
    dataset = ClipDataset(damaged_store, records, 5, transform, on_bad_item="skip")
    loader = DataLoader(dataset, batch_size=3, num_workers=workers, collate_fn=lambda items: items)
    served = [item["id"] for batch in loader for item in batch]
    assert len(served) == 6 and ids[2] not in served and ids[4] not in served
    assert dataset.n_skipped == 2  # one counter for the workers and this process
    with pytest.raises(BadClipError, match="row 2"):
        ClipDataset(damaged_store, records, 5, transform)[2]  # on_bad_item raise: the error


def test_a_training_run_logs_the_items_it_skipped(damaged_store, rows, tmp_path):
    from lib.engine.config import Config
    from lib.engine.trainer import Trainer, TrainStream

    transform = ClipTransform(32, train=True, mode="img_rand_crop", normalize=False)
    dataset = ClipDataset(damaged_store, [Record(v) for v in row_ids(rows)], 5, transform, on_bad_item="skip")

    def step(model, batch):
        return {"loss": model(batch.float().mean(dim=(1, 2, 3, 4))[:, None]).pow(2).mean()}

    cfg = Config(
        {"path_output": str(tmp_path / "run"), "size_epoch": 1, "tensorboard": False, "n_workers": 0}
    )
    stream = TrainStream("clips", dataset, lambda items: stack_clips(items), 3, step)
    trainer = Trainer(cfg, torch.nn.Linear(1, 1), stream)
    summary = trainer.fit()
    trainer.close()
    assert summary["skipped_items"] == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"kind": "skipped", "epoch": 1, "step": 2, "clips": 2} in records
