"""lib.utils.atomic: every writer leaves the old file or the new one, and never a temporary file behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from lib.utils.atomic import (
    replace_dir,
    temp_path_beside,
    write_atomic,
    write_atomic_path,
    write_bytes,
    write_json,
    write_text,
)


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_bytes_text_and_json_land_complete_and_create_the_folder(tmp_path):
    assert write_bytes(tmp_path / "a" / "x.bin", b"\x00\x01") == tmp_path / "a" / "x.bin"
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"\x00\x01"
    write_text(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_bytes() == "é\n".encode()
    write_json(tmp_path / "j.json", {"b": ["é"], "a": 1}, ensure_ascii=False, indent=1, sort_keys=True)
    assert (tmp_path / "j.json").read_text(encoding="utf-8") == '{\n "a": 1,\n "b": [\n  "é"\n ]\n}\n'
    write_json(tmp_path / "k.json", ["é"])  # json.dumps' own defaults
    assert (tmp_path / "k.json").read_text() == '["\\u00e9"]\n'
    assert names(tmp_path) == ["a", "j.json", "k.json", "t.txt"]


def test_a_torch_object_through_a_writer_callback(tmp_path):
    write_atomic(tmp_path / "s.pt", lambda f: torch.save({"w": torch.arange(3)}, f))
    assert torch.equal(torch.load(tmp_path / "s.pt", weights_only=True)["w"], torch.arange(3))


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path, error):
    path = write_text(tmp_path / "state.txt", "old")

    def broken(f):
        f.write(b"half")
        raise error

    def broken_by_name(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        write_atomic(path, broken)
    with pytest.raises(type(error)):
        write_atomic_path(path, broken_by_name)
    assert path.read_text() == "old"
    assert names(tmp_path) == ["state.txt"]


def test_a_writer_that_needs_a_file_name_sees_the_suffix(tmp_path):
    seen = []

    def save(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"video")

    write_atomic_path(tmp_path / "clip.mp4", save)
    assert seen[0].parent == tmp_path and seen[0].suffix == ".mp4" and seen[0].name.startswith(".clip.")
    assert (tmp_path / "clip.mp4").read_bytes() == b"video" and names(tmp_path) == ["clip.mp4"]
    with pytest.raises(FileNotFoundError, match="did not create"):
        write_atomic_path(tmp_path / "other.mp4", lambda tmp: None)
    assert names(tmp_path) == ["clip.mp4"]


def test_temporary_names_are_hidden_distinct_and_beside_the_target(tmp_path):
    a, b = temp_path_beside(tmp_path / "x.lineidx"), temp_path_beside(tmp_path / "x.lineidx")
    assert a != b and a.parent == tmp_path and a.name.startswith(".x.") and a.suffix == ".lineidx"


def test_only_whole_file_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        write_atomic(tmp_path / "x", lambda f: None, mode="ab")


def test_replace_dir_swaps_a_finished_folder_in(tmp_path):
    final = tmp_path / "model"
    for version in ("1", "2"):
        tmp = tmp_path / "model.tmp"
        tmp.mkdir()
        write_json(tmp / "config.json", {"v": version})
        replace_dir(tmp, final)
        assert json.loads((final / "config.json").read_text()) == {"v": version}
        assert names(tmp_path) == ["model"]  # neither model.tmp nor model.old stays


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_every_file_gets_the_umask_permissions_even_from_a_writer_that_makes_private_files(tmp_path, umask):
    """safetensors' own writer creates 0600 files: model.safetensors came out 0600 beside a 0644
    config.json, so a shared checkpoint folder was half unreadable to its group (issue #28)."""
    from safetensors.torch import save_file

    from lib.model.checkpoint import save_model_dir
    from lib.model.config import LavenderConfig
    from lib.model.lavender import LavenderModel

    old = os.umask(umask)
    try:
        weights = write_atomic_path(tmp_path / "w.safetensors", lambda p: save_file({"a": torch.zeros(2)}, p))
        text = write_text(tmp_path / "c.json", "{}")
        config = LavenderConfig(
            swin_size="custom", swin_embed_dim=8, swin_depths=(1, 1, 1, 1), swin_heads=(1, 1, 1, 1),
            vocab_size=16, hidden_size=8, num_layers=1, num_heads=1, intermediate_size=8,
        )  # fmt: skip
        folder = save_model_dir(LavenderModel(config), tmp_path / "model")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    for path in (weights, text, folder / "model.safetensors", folder / "config.json"):
        assert stat.S_IMODE(path.stat().st_mode) == expected, path.name
