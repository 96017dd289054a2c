"""ALPRO's prompting entity modelling through the MLM head: regions, pseudo-labels from a frozen prompter."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from lib.engine.checkpointing import seed_everything
from lib.engine.config import load_config
from lib.tasks.build import build_model
from lib.tasks.common import load_tokenizer
from lib.tasks.entity_prompts import EntityPromptTask, caption_entities, sample_region
from lib.tasks.run import run

VTC = ("--contrastive_dim", "16", "--video_attends_text", "false")


def test_regions_are_grid_aligned_and_cover_30_to_50_percent():
    rng = random.Random(0)
    for _ in range(200):
        top, left, h, w = sample_region(8, 8, (0.3, 0.5), rng)
        assert 0 <= top <= 8 - h and 0 <= left <= 8 - w
        assert 0.3 <= h * w / 64 <= 0.5
    assert sample_region(2, 2, (0.3, 0.5), rng)[2:] in ((1, 2), (2, 1))  # 50 %, the nearest on a 2x2 grid


def test_caption_entities_are_the_most_frequent_content_words():
    captions = ["two red circles move left", "a red square moves up", "one red circle"]
    assert caption_entities(captions, 2) == ["red", "circles"] or caption_entities(captions, 1) == ["red"]
    assert "two" not in caption_entities(captions, 10) and "a" not in caption_entities(captions, 10)


@pytest.fixture(scope="module")
def prompter(tmp_path_factory, demo_data, minilm_dir) -> Path:
    """A tiny contrastive-only checkpoint (the vtc task), the prompter."""
    out = tmp_path_factory.mktemp("prompter")
    args = [
        "--data_dir", str(demo_data), "--dataset", "demo", "--task", "demo-retrieval",
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "2",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "16", "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 4, 8]", "--vis_backbone_init", "random", "--kinetics", "-1",
        "--size_img", "64", "--size_frame", "4", "--size_txt", "16", "--size_batch", "4", "--size_epoch", "1",
        "--steps_per_epoch", "3", "--n_workers", "0", "--tensorboard", "false", "--path_output", str(out),
        *VTC,
    ]  # fmt: skip
    run("vtc", args)
    return out / "model"


def test_the_pem_loss_falls_and_ignores_unconfident_pseudo_labels(tiny_args, prompter, tmp_path):
    entities = tmp_path / "entities.txt"
    entities.write_text("red\nblue\ngreen\ncircle\nsquare\ntriangle\n")
    cfg = load_config(
        [*tiny_args, *VTC, "--type", "pem", "--task", "demo-retrieval", "--pem_prompter", str(prompter),
         "--pem_entities", str(entities), "--pem_threshold", "0"]
    )  # fmt: skip
    tok = load_tokenizer(cfg.txt_backbone)
    seed_everything(0)
    task, model = EntityPromptTask(cfg, tok), build_model(cfg, tok)
    assert task.entities == ["red", "blue", "green", "circle", "square", "triangle"]
    stream = task.train_stream()
    random.seed(0)
    batch = stream.collate_fn([stream.dataset[i] for i in range(4)])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    losses = []
    model.eval()  # no dropout: the same batch and regions every step
    for _ in range(12):
        out = stream.step_fn(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["kl"].item())  # the soft CE above its floor (the pseudo-labels' entropy)
    assert losses[-1] < 0.5 * losses[0]
    prompter_model, _ = task.prompter(torch.device("cpu"))
    assert all(not p.requires_grad for p in prompter_model.parameters())  # frozen
    # the threshold: rows whose pseudo-label is not confident enough carry no loss
    task.cfg = task.cfg.override({"pem_threshold": 1.01})
    out = stream.step_fn(model, batch)
    assert out["loss"].item() == 0.0 and out["confident"].item() == 0.0
    task.cfg = task.cfg.override({"pem_threshold": 0.0})
    with torch.no_grad():
        metrics = task.evaluate(model.eval(), "test")
    assert metrics["n"] == 8 and 0 <= metrics["agreement"] <= 100 and 0 < metrics["prompter_confidence"] <= 1
