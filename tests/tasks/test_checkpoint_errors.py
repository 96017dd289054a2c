"""Never a silent fresh start, never a bare parser error (issue #28, item 2): a ``--path_ckpt`` must fit the
model (missing / unexpected tensors are an error naming them, unless allow-listed or ``--ckpt_partial``; one
that fits under half the model is always an error), and a damaged ``model.safetensors`` / ``config.json`` /
``.pt`` is an error naming the file in training, ``Lavender.from_pretrained`` and ``python -m lib.predict``.
Every checkpoint here is a real one written by the project (``save_model_dir``) and then cut or damaged."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from lib.engine.config import load_config
from lib.model.checkpoint import CheckpointError, save_model_dir
from lib.tasks.build import build_model
from lib.utils.files import UnreadableFileError


@pytest.fixture(scope="module")
def model_args(tiny_model_argv, tmp_path_factory) -> list[str]:
    """The tiny model with a contrastive head (to leave out) and a 16-wide, 120-word fusion encoder of its
    own (randomly initialised from a config.json alone: each model builds in milliseconds)."""
    bert = tmp_path_factory.mktemp("bert")
    (bert / "config.json").write_text(json.dumps({
        "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
        "vocab_size": 120, "max_position_embeddings": 64, "type_vocab_size": 2, "hidden_act": "gelu",
    }))  # fmt: skip
    extra = ["--contrastive_dim", "8", "--fusion_encoder", str(bert), "--fusion_encoder_rand_init", "true"]
    return [*tiny_model_argv(tmp_path_factory.mktemp("tiny")), *extra]


@pytest.fixture(scope="module")
def folder(model_args, tmp_path_factory) -> Path:
    """A model folder (config.json + model.safetensors) as the project writes it."""
    torch.manual_seed(1)
    return save_model_dir(build_model(load_config(model_args)), tmp_path_factory.mktemp("model") / "m")


def weights_file(folder: Path, tmp_path: Path, keep=lambda key: True, extra=None) -> Path:
    """The folder's weights with only the tensors ``keep`` accepts, plus ``extra`` ones, as a new file."""
    tensors = {k: v for k, v in load_file(folder / "model.safetensors").items() if keep(k)}
    path = tmp_path / "ckpt.safetensors"
    save_file({**tensors, **(extra or {})}, path)
    return path


def build(model_args: list[str], *more: str):
    return build_model(load_config([*model_args, *more]))


def test_a_complete_checkpoint_loads_every_tensor(model_args, folder):
    model = build(model_args, "--path_ckpt", str(folder))
    saved = load_file(folder / "model.safetensors")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())


def test_missing_tensors_are_an_error_naming_them_unless_ckpt_partial(model_args, folder, tmp_path, caplog):
    lost = "trsfr.layer.0.attention.self.query.weight"
    ckpt = weights_file(
        folder, tmp_path, keep=lambda k: not k.startswith("trsfr.layer.0.attention.self.query")
    )
    with pytest.raises(CheckpointError) as e:
        build(model_args, "--path_ckpt", str(ckpt))
    message = str(e.value)
    assert (
        str(ckpt) in message
        and "lacks (2)" in message
        and lost in message
        and "--ckpt_partial true" in message
    )
    with caplog.at_level(logging.WARNING, logger="lib.tasks.build"):
        model = build(model_args, "--path_ckpt", str(ckpt), "--ckpt_partial", "true")
    assert lost in caplog.text and "kept at their initialisation" in caplog.text
    saved = load_file(ckpt)
    assert torch.equal(
        model.state_dict()["trsfr.layer.0.output.dense.weight"], saved["trsfr.layer.0.output.dense.weight"]
    )


def test_unexpected_tensors_are_an_error_naming_them(model_args, folder, tmp_path):
    ckpt = weights_file(folder, tmp_path, extra={"enc_aux.proj.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"tensors the model lacks \(1\): enc_aux\.proj\.weight"):
        build(model_args, "--path_ckpt", str(ckpt))
    build(model_args, "--path_ckpt", str(ckpt), "--ckpt_partial", "true")


def test_allow_listed_tensors_may_be_missing(model_args, folder, tmp_path, caplog):
    """A LAVENDER checkpoint has no contrastive head (vtc.*) and no task-token table of ours to fear."""
    ckpt = weights_file(folder, tmp_path, keep=lambda k: not k.startswith(("vtc.", "emb_task")))
    with caplog.at_level(logging.WARNING, logger="lib.tasks.build"):
        build(model_args, "--path_ckpt", str(ckpt))
    assert "vtc.proj_video" in caplog.text and "emb_task" in caplog.text


def test_a_checkpoint_that_matches_nothing_never_trains_from_scratch(model_args, folder, tmp_path):
    """Before: strict=False loaded nothing, logged at INFO and the run trained from scratch with exit 0."""
    renamed = {f"model.{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    ckpt = tmp_path / "other.safetensors"
    save_file(renamed, ckpt)
    for partial in ("false", "true"):
        with pytest.raises(CheckpointError, match=r"fits only 0 of the model's \d+ tensors"):
            build(model_args, "--path_ckpt", str(ckpt), "--ckpt_partial", partial)
    text_only = weights_file(folder, tmp_path, keep=lambda k: not k.startswith("enc_img."))  # 34 of 109
    with pytest.raises(CheckpointError, match="less than 50%"):
        build(model_args, "--path_ckpt", str(text_only), "--ckpt_partial", "true")


def test_the_swin_alone_loads_through_vis_backbone_ckpt(model_args, folder, tmp_path):
    swin = weights_file(folder, tmp_path, keep=lambda k: k.startswith("enc_img.swin."))
    model = build(model_args, "--vis_backbone_init", "3d", "--vis_backbone_ckpt", str(swin))
    key = "enc_img.swin.patch_embed.proj.weight"
    assert torch.equal(model.state_dict()[key], load_file(swin)[key])


# ------------------------------------------------------------------------------------------ damaged files


def damaged(
    folder: Path, tmp_path: Path, name: str, data: bytes | None = None, cut: int | None = None
) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(folder, copy)
    path = copy / name
    path.write_bytes(data if data is not None else path.read_bytes()[:cut])
    return copy


GARBAGE = {
    "garbage_weights": ("model.safetensors", b"\xff" * 64, None, r"not a readable safetensors file"),
    "truncated_weights": ("model.safetensors", None, 5000, r"not a readable safetensors file"),
    "truncated_config": ("config.json", None, 16, r"not a valid checkpoint config \(config\.json\)"),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_damaged_checkpoint_files_are_named(model_args, folder, tmp_path, capsys, case):
    from lib.api import Lavender
    from lib.predict import main

    name, data, cut, pattern = GARBAGE[case]
    copy = damaged(folder, tmp_path, name, data, cut)
    bad = str(copy / name)
    with pytest.raises((CheckpointError, UnreadableFileError), match=pattern) as e:
        Lavender.from_pretrained(copy, device="cpu")
    assert bad in str(e.value)
    assert main(["--ckpt", str(copy), "--device", "cpu", "caption", str(tmp_path / "a.mp4")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}") and "Traceback" not in err
    if name == "model.safetensors":  # training reads the weights of a folder named by --path_ckpt
        with pytest.raises(CheckpointError, match=pattern) as e:
            build(model_args, "--path_ckpt", str(copy))
        assert bad in str(e.value)


def test_a_garbage_pt_names_the_file_and_a_pickle_says_what_to_do(model_args, tmp_path):
    garbage = tmp_path / "ckpt.pt"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match=rf"{garbage}: not a PyTorch checkpoint"):
        build(model_args, "--path_ckpt", str(garbage))
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "args": logging.getLogger("x")}, pickled)
    with pytest.raises(CheckpointError) as e:
        build(model_args, "--path_ckpt", str(pickled))
    assert "convert_checkpoint.py" in str(e.value) and "--path_ckpt FOLDER" in str(e.value)
