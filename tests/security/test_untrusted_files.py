"""Files a user can hand us never run code: every load path gets a pickle whose unpickling would create a
marker folder, and the marker must not appear (issue #28, item 1).

The payload is live: `test_the_payload_runs_when_unpickled` shows it creates its marker under a plain
``pickle.load`` / ``torch.load(weights_only=False)``. The loads it reaches here are the real ones: the
engine's toy run (`tests/engine/toy_train.py`, a subprocess, as `--resume` is used), the run's model
builder (`--path_ckpt`, `--fusion_encoder`), `Lavender.from_pretrained`, `python -m lib.predict --ckpt`,
`_tools/convert_checkpoint.py` and the id → offset / frame pickle readers.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from engine_runs import run_toy

from lib.data.tsv import TSVError, load_frame_pickle, load_id2lineidx
from lib.engine.deepspeed_support import MANIFEST, MODEL_STATES, write_manifest

REPO = Path(__file__).resolve().parents[2]
TOY_ARGS = [
    "--toy_streams", "reg", "--toy_sizes", "16", "--size_batch", "8", "--size_epoch", "1",
    "--logging_steps", "1", "--n_workers", "0", "--precision", "fp32", "--lr", "1e-2",
]  # fmt: skip
DS_TOY_ARGS = [*TOY_ARGS, "--deepspeed", "true", "--zero_stage", "2"]


class Payload:
    """Unpickling it calls os.mkdir(marker): code chosen by whoever wrote the file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PAYLOAD_RAN"
    yield path
    assert not path.exists(), "a pickle in a file we were handed ran code"


def test_the_payload_runs_when_unpickled(tmp_path):
    pickle.loads(pickle.dumps(Payload(tmp_path / "a")))
    torch.save({"x": Payload(tmp_path / "b")}, tmp_path / "f.pt")
    torch.load(tmp_path / "f.pt", weights_only=False)
    assert (tmp_path / "a").is_dir() and (tmp_path / "b").is_dir()


# ------------------------------------------------------------------------------------ --resume FOLDER


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory) -> Path:
    """A real checkpoint folder of a 1-epoch toy run (2 optimizer steps)."""
    run = run_toy(tmp_path_factory.mktemp("toy"), *TOY_ARGS).check()
    return run.out / "checkpoints" / "step_00000002"


def handed_over(toy_checkpoint: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "received"
    shutil.copytree(toy_checkpoint, folder)
    return folder


def trainer_state(folder: Path) -> dict:
    return torch.load(folder / "trainer_state.pt", weights_only=True)


def as_deepspeed_checkpoint(folder: Path, marker: Path) -> None:
    """Make the folder look like a DeepSpeed checkpoint whose ds/ files carry the payload."""
    state = trainer_state(folder)
    module = {f"model.{k}": v for k, v in state.pop("model").items()}
    for key in ("optimizer", "scheduler", "scaler"):
        state.pop(key)
    torch.save({**state, "deepspeed": True}, folder / "trainer_state.pt")
    (folder / "ds").mkdir()
    torch.save({"module": module, "x": Payload(marker)}, folder / "ds" / MODEL_STATES)
    torch.save(
        {"optimizer_state_dict": Payload(marker)}, folder / "ds" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    )


@pytest.mark.parametrize("deepspeed", [False, True])
def test_resume_refuses_a_pickle_in_trainer_state(toy_checkpoint, tmp_path, marker, deepspeed):
    folder = handed_over(toy_checkpoint, tmp_path)
    torch.save({**trainer_state(folder), "x": Payload(marker)}, folder / "trainer_state.pt")
    args = DS_TOY_ARGS if deepspeed else TOY_ARGS
    run = run_toy(tmp_path / "run", *args, "--size_epoch", "2", "--resume", str(folder))
    assert run.returncode != 0 and "Weights only load failed" in run.stderr


def test_resume_refuses_a_pickle_in_an_rng_file(toy_checkpoint, tmp_path, marker):
    folder = handed_over(toy_checkpoint, tmp_path)
    torch.save({"python": Payload(marker)}, folder / "rng_rank0.pt")
    run = run_toy(tmp_path / "run", *TOY_ARGS, "--size_epoch", "2", "--resume", str(folder))
    assert run.returncode != 0 and "Weights only load failed" in run.stderr


def test_evaluating_a_deepspeed_checkpoint_loads_its_model_states_weights_only(
    toy_checkpoint, tmp_path, marker
):
    """The hole of the starting code: `_model_weights` read ds/mp_rank_00_model_states.pt unpickling."""
    folder = handed_over(toy_checkpoint, tmp_path)
    as_deepspeed_checkpoint(folder, marker)
    run = run_toy(tmp_path / "run", *TOY_ARGS, "--eval_only", "true", "--resume", str(folder))
    assert run.returncode != 0 and "Weights only load failed" in run.stderr


@pytest.mark.parametrize("tampering", ["no_manifest", "file_changed", "file_added"])
def test_deepspeed_resume_refuses_a_folder_this_project_did_not_write(
    toy_checkpoint, tmp_path, marker, tampering
):
    folder = handed_over(toy_checkpoint, tmp_path)
    as_deepspeed_checkpoint(folder, marker)
    if tampering != "no_manifest":
        write_manifest(folder)
        if tampering == "file_changed":
            torch.save({"module": {}, "x": Payload(marker)}, folder / "ds" / MODEL_STATES)
        else:
            torch.save(Payload(marker), folder / "ds" / "extra.pt")
    run = run_toy(tmp_path / "run", *DS_TOY_ARGS, "--size_epoch", "2", "--resume", str(folder))
    assert run.returncode != 0
    assert f"refusing to resume DeepSpeed from {folder}" in run.stderr and MANIFEST in run.stderr
    assert "DeepSpeed config" not in run.stdout  # refused before DeepSpeed started


@pytest.mark.slow
def test_deepspeed_itself_loads_weights_only_even_with_a_forged_manifest(toy_checkpoint, tmp_path, marker):
    """Whoever forges the files and their manifest passes the check; DeepSpeed's own loads still refuse."""
    folder = handed_over(toy_checkpoint, tmp_path)
    as_deepspeed_checkpoint(folder, marker)
    write_manifest(folder)
    run = run_toy(tmp_path / "run", *DS_TOY_ARGS, "--size_epoch", "2", "--resume", str(folder))
    assert run.returncode != 0 and "Weights only load failed" in run.stderr
    assert "DeepSpeed config" in run.stdout  # DeepSpeed did start and read the folder


# ------------------------------------------------------------------------ model files: the run, the API


@pytest.fixture(scope="module")
def tiny_model_args(tiny_model_argv, tmp_path_factory) -> list[str]:
    return tiny_model_argv(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_folder(tiny_model_args, tmp_path_factory) -> Path:
    """A model folder (config.json + model.safetensors) as save_pretrained writes it."""
    from lib.engine.config import load_config
    from lib.model.checkpoint import save_model_dir
    from lib.tasks.build import build_model

    return save_model_dir(build_model(load_config(tiny_model_args)), tmp_path_factory.mktemp("model") / "m")


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
def test_path_ckpt_refuses_a_pickle(tiny_model_args, tmp_path, marker, suffix):
    from lib.engine.config import load_config
    from lib.model.checkpoint import CheckpointError
    from lib.tasks.build import build_model

    ckpt = tmp_path / f"ckpt{suffix}"
    torch.save({"model": {"x": torch.zeros(1)}, "args": Payload(marker)}, ckpt)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_model(load_config([*tiny_model_args, "--path_ckpt", str(ckpt)]))


def test_a_bert_folder_with_a_pickled_pytorch_model_bin(tiny_model_args, minilm_dir, tmp_path, marker):
    from lib.engine.config import load_config
    from lib.model.checkpoint import CheckpointError
    from lib.tasks.build import build_model

    bert = tmp_path / "bert"
    bert.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (minilm_dir / name).is_file():
            shutil.copy(minilm_dir / name, bert / name)
    torch.save({"x": Payload(marker)}, bert / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        build_model(load_config([*tiny_model_args, "--fusion_encoder", str(bert)]))


def pickled_model_folder(tiny_folder: Path, tmp_path: Path, marker: Path, name: str) -> Path:
    folder = tmp_path / "received"
    shutil.copytree(tiny_folder, folder)
    (folder / "model.safetensors").unlink()
    torch.save({"state_dict": Payload(marker)}, folder / name)
    return folder


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "model.safetensors"])
def test_from_pretrained_refuses_a_pickled_model_folder(tiny_folder, tmp_path, marker, name):
    from lib.api import Lavender

    folder = pickled_model_folder(tiny_folder, tmp_path, marker, name)
    with pytest.raises(Exception):  # noqa: B017 - missing weights or a refused file, never a load
        Lavender.from_pretrained(folder, device="cpu")


def test_from_pretrained_refuses_a_pickled_reference_file(tmp_path, marker, minilm_dir):
    from lib.api import Lavender
    from lib.model.checkpoint import CheckpointError

    torch.save({"model": Payload(marker)}, tmp_path / "ckpt.pt")
    reference = {
        "vis_backbone_size": "tiny",
        "fusion_encoder": str(minilm_dir),
        "size_img": 32,
        "size_frame": 2,
    }
    with pytest.raises(CheckpointError, match="weights_only=True"):
        Lavender.from_pretrained(tmp_path / "ckpt.pt", device="cpu", reference_args=reference)


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors"])
def test_predict_ckpt_refuses_a_pickled_model_folder(tiny_folder, tmp_path, marker, name, capsys):
    from lib.predict import main

    folder = pickled_model_folder(tiny_folder, tmp_path, marker, name)
    assert main(["--ckpt", str(folder), "--device", "cpu", "caption", str(tmp_path / "clip.mp4")]) == 1
    assert "error:" in capsys.readouterr().err


def test_convert_checkpoint_refuses_a_pickle_without_trust_pickle(tmp_path, marker, minilm_dir, capsys):
    spec = importlib.util.spec_from_file_location(
        "convert_checkpoint", REPO / "_tools" / "convert_checkpoint.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch.save({"model": Payload(marker)}, tmp_path / "ckpt.pt")
    (tmp_path / "args.json").write_text(f'{{"vis_backbone_size": "tiny", "fusion_encoder": "{minilm_dir}"}}')
    argv = [
        "--src",
        str(tmp_path / "ckpt.pt"),
        "--config",
        str(tmp_path / "args.json"),
        "--out",
        str(tmp_path / "out"),
    ]
    assert tool.main(argv) == 1
    assert "--trust-pickle" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ data pickles (id2lineidx)


def test_id2lineidx_and_frame_pickles_refuse_objects(tmp_path, marker):
    path = tmp_path / "img_x.id2lineidx.pkl"
    path.write_bytes(pickle.dumps({"video1": Payload(marker)}))
    with pytest.raises(TSVError, match="unexpected object"):
        load_id2lineidx(path)
    with pytest.raises(TSVError, match="unexpected object"):
        load_frame_pickle(path)
