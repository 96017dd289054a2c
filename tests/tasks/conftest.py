"""A small real demo dataset (videos → extractor → TSV + every annotation format) and tiny-model args."""

from __future__ import annotations

from pathlib import Path

import pytest

from lib.demo.synthetic import make_demo_dataset


@pytest.fixture(scope="module")
def built(demo_data, minilm_dir):
    """A tiny multi-task checkpoint folder saved through the engine's hook (see api_checkpoint.py)."""
    from api_checkpoint import build_checkpoint

    return build_checkpoint(demo_data, minilm_dir)


@pytest.fixture(scope="module")
def api(built):
    """The tiny checkpoint loaded with the Python API."""
    from lib.api import Lavender

    return Lavender.from_pretrained(built.folder, device="cpu")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    make_demo_dataset(out, seed=0, n_train=24, n_val=6, n_test=8, frame_size=64, sample=4, progress=False)
    return out


@pytest.fixture
def tiny_args(demo_data, minilm_dir, tmp_path) -> list[str]:
    """Command-line args for a tiny model on the demo data: custom small Swin, 2 MiniLM fusion layers, CPU."""
    return [
        "--data_dir", str(demo_data),
        "--dataset", "demo",
        "--txt_backbone", str(minilm_dir),
        "--fusion_encoder", str(minilm_dir),
        "--fusion_layers", "2",
        "--vis_backbone_size", "custom",
        "--vis_embed_dim", "16",
        "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 4, 8]",
        "--vis_backbone_init", "random",
        "--kinetics", "-1",
        "--size_img", "64",
        "--size_frame", "4",
        "--size_txt", "16",
        "--size_batch", "4",
        "--size_epoch", "1",
        "--n_workers", "0",
        "--lr", "1e-4",
        "--logging_steps", "1",
        "--tensorboard", "false",
        "--save_model_every_epoch", "false",
        "--path_output", str(tmp_path / "out"),
    ]  # fmt: skip


@pytest.fixture(scope="session")
def av_data(tmp_path_factory) -> Path:
    """The tiny audio-visual dataset of audio_data.py (real AAC / Opus sound; two clips without audio)."""
    from audio_data import make_av_dataset

    return make_av_dataset(tmp_path_factory.mktemp("av"))
