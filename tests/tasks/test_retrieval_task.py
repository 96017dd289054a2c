"""Retrieval (lib.tasks.retrieval): the entry point, the VTM loss, and the full-ranking evaluation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.data.annotations import caption_text
from lib.engine.checkpointing import seed_everything
from lib.engine.config import load_config
from lib.metrics.retrieval import retrieval_metrics
from lib.model.layouts import vtm_pairs
from lib.tasks.build import build_model
from lib.tasks.common import load_tokenizer
from lib.tasks.retrieval import RetrievalTask
from lib.tasks.run import run


def test_vtm_pairs_give_one_positive_and_distinct_negatives_per_video():
    video, text, matched = vtm_pairs(5, 3, random.Random(0))
    assert len(video) == 5 * 4 and sum(matched) == 5
    for i in range(5):
        rows = [k for k, v in enumerate(video) if v == i]
        assert [text[k] for k in rows if matched[k]] == [i]
        negatives = [text[k] for k in rows if not matched[k]]
        assert len(set(negatives)) == 3 and i not in negatives
    assert sum(vtm_pairs(2, 3, random.Random(0))[2]) == 2  # negatives capped by the batch


def test_entry_point_trains_and_ranks_every_test_caption_against_every_video(tiny_args, demo_data):
    metrics = run("retrieval", [*tiny_args, "--task", "demo-retrieval", "--steps_per_epoch", "3"])
    out = Path(tiny_args[tiny_args.index("--path_output") + 1])
    assert json.loads((out / "metrics.json").read_text()) == metrics
    test = json.loads((demo_data / "txt_demo-retrieval.json").read_text())["test"]
    prefix = "demo-retrieval/test/"
    assert metrics[prefix + "n_texts"] == len(test)
    assert metrics[prefix + "n_videos"] == len({item["video"] for item in test})
    for key in ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MedR", "v2t_R1", "ms_per_pair"):
        assert prefix + key in metrics
    assert 0 <= metrics[prefix + "t2v_R1"] <= metrics[prefix + "t2v_R5"] <= metrics[prefix + "t2v_R10"] <= 100


def _task(tiny_args):
    cfg = load_config([*tiny_args, "--type", "retrieval", "--task", "demo-retrieval"])
    tok = load_tokenizer(cfg.txt_backbone)
    seed_everything(0)
    return RetrievalTask(cfg, tok), build_model(cfg, tok)


def test_evaluation_equals_the_metrics_of_its_own_score_matrix(tiny_args):
    task, model = _task(tiny_args)
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model, "test")
        records = task.ann["test"]
        videos, feats, masks = task.encode_videos(model, records)
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        scores = task.make_predictor(model).score_matrix(texts, feats, masks)
        # one pair at a time gives the same scores as the batched passes
        single = task.make_predictor(model).score_matrix(texts[:1], feats[1:2], masks[1:2])
    assert scores.shape == (len(records), len(videos))
    assert single[0, 0] == pytest.approx(scores[0, 1], abs=1e-5)
    expected = retrieval_metrics(scores, [videos.index(r.video) for r in records])
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)


def test_training_steps_lower_the_matching_loss(tiny_args):
    task, model = _task(tiny_args)
    stream = task.train_stream()
    random.seed(0)
    batch = stream.collate_fn([stream.dataset[i] for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    losses = []
    for _ in range(12):
        loss = stream.step_fn(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0]
