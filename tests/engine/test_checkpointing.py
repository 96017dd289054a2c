"""Atomic writes, RNG capture, checkpoint folders (latest, keep-last, stale temps), path checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lib.engine.checkpointing import (
    CheckpointManager,
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    require_existing,
    resolve_resume,
    restore_rng_state,
)
from lib.utils.atomic import write_atomic, write_text


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    path = tmp_path / "state.txt"
    write_text(path, "old")

    def broken(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.txt"]  # no temp file left behind


def draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    write_atomic(tmp_path / "rng.pt", lambda f: torch.save(capture_rng_state(), f))
    first = draws()
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert draws() == first


def make_manager(tmp_path, keep_last=2):
    return CheckpointManager(tmp_path, keep_last=keep_last, rank=0, barrier=lambda: None)


def test_manager_publishes_atomically_keeps_last_and_points_latest(tmp_path):
    manager = make_manager(tmp_path)
    for step in (3, 6, 9):
        manager.save(step, lambda d, s=step: (d / "trainer_state.pt").write_text(str(s)))
    root = tmp_path / "checkpoints"
    assert [p.name for p in list_checkpoints(root)] == ["step_00000006", "step_00000009"]
    assert (root / "latest").read_text().strip() == "step_00000009"
    assert latest_checkpoint(root) == root / "step_00000009"
    assert resolve_resume(True, tmp_path) == root / "step_00000009"
    assert resolve_resume(str(root / "step_00000006"), tmp_path) == root / "step_00000006"
    assert resolve_resume(str(tmp_path), "elsewhere") == root / "step_00000009"


def test_killed_write_leaves_only_a_temp_folder_that_is_cleaned(tmp_path):
    manager = make_manager(tmp_path)
    manager.save(3, lambda d: (d / "trainer_state.pt").write_text("3"))

    def killed(d):
        (d / "trainer_state.pt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        manager.save(6, killed)
    root = tmp_path / "checkpoints"
    assert (root / "step_00000006.tmp").is_dir()
    assert latest_checkpoint(root) == root / "step_00000003"  # the half-written one is never "latest"
    make_manager(tmp_path).remove_stale()
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000003"]


def test_resume_and_ckpt_path_errors(tmp_path):
    assert resolve_resume(False, tmp_path) is None
    assert resolve_resume(True, tmp_path) is None  # nothing yet: start fresh
    with pytest.raises(FileNotFoundError, match="--resume .*not a checkpoint folder"):
        resolve_resume(str(tmp_path / "nope"), tmp_path)
    assert require_existing("") is None
    assert require_existing(str(tmp_path)) == tmp_path
    with pytest.raises(FileNotFoundError, match=r"--path_ckpt .*missing\.pt does not exist"):
        require_existing(str(tmp_path / "missing.pt"))
