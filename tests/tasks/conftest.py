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


# ---------------------------------------------------------------------------------- long-form (LF-VILA)


@pytest.fixture(scope="session")
def long_data(tmp_path_factory) -> Path:
    """Six real 4-segment videos and the long-form annotations (:func:`long_form_data.make_long_data`)."""
    from long_form_data import make_long_data

    return make_long_data(tmp_path_factory.mktemp("long"))


@pytest.fixture
def long_args(long_data, minilm_dir, tmp_path) -> list[str]:
    """A tiny HTWA model on ``long_data``: 2 clips x 4 frames of 32 px, a random 2-layer 32-wide fusion
    encoder (MiniLM's vocabulary and tokenizer), CPU."""
    return [
        "--data_dir", str(long_data), "--dataset", "long",
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "2",
        "--fusion_encoder_rand_init", "true", "--fusion_hidden_size", "32", "--fusion_heads", "2",
        "--fusion_intermediate_size", "64",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "16", "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 2, 4]", "--vis_window", "[8, 4, 4]", "--vis_temporal_windows", "[2, 4, 8, 8]",
        "--vis_local_window", "4", "--vis_backbone_init", "random", "--kinetics", "-1",
        "--vis_drop_path", "0",
        "--size_img", "32", "--max_size_patch", "2", "--long_clips", "2", "--long_frames_per_clip", "4",
        "--size_frame", "8", "--max_size_frame", "8", "--contrastive_dim", "16", "--long_form_dim", "16",
        "--max_sentences", "4", "--long_size_sentence", "8", "--size_txt", "24", "--size_batch", "4",
        "--size_epoch", "1", "--steps_per_epoch", "2", "--n_workers", "0", "--lr", "1e-4",
        "--logging_steps", "1", "--tensorboard", "false", "--save_model_every_epoch", "false",
        "--precision", "fp32", "--path_output", str(tmp_path / "out"),
        "--freeze_params", '["enc_txt.emb_txt.word_embeddings", "fc_mtm.predictions.decoder.weight"]',
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- audio (VALOR)


@pytest.fixture(scope="session")
def av_data(tmp_path_factory) -> Path:
    """The tiny audio-visual dataset of audio_data.py (real AAC / Opus sound; two clips without audio)."""
    from audio_data import make_av_dataset

    return make_av_dataset(tmp_path_factory.mktemp("av"))
