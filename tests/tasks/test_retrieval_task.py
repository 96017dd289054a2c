"""Retrieval (lib.tasks.retrieval): the entry point, the VTM loss, and the full-ranking evaluation."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lib.data.annotations import caption_text
from lib.engine.checkpointing import seed_everything
from lib.engine.config import ConfigError, load_config
from lib.metrics.retrieval import retrieval_metrics
from lib.model.bert import text_self_mask
from lib.model.layouts import plain_text, vtm_pairs
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


def _task(tiny_args, *extra: str):
    cfg = load_config([*tiny_args, "--type", "retrieval", "--task", "demo-retrieval", *extra])
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


# ------------------------------------------------------------------------ contrastive and two-stage modes

VTC = ("--contrastive_dim", "16", "--video_attends_text", "false")


def _evaluate(task, model, mode: str, k: int = 16) -> dict[str, float]:
    task.cfg = task.cfg.override({"retrieval_mode": mode, "rerank_k": k})
    task._predictor = None
    with torch.no_grad():
        return task.evaluate(model.eval(), "test")


def test_dual_and_rerank_rankings_equal_a_brute_force_reference(tiny_args):
    task, model = _task(tiny_args, *VTC, "--vtc_weight", "1")
    records = task.ann["test"]
    with torch.no_grad():
        videos, feats, masks = task.encode_videos(model.eval(), records)
        texts = [caption_text(r, False, random.Random(0)) for r in records]
        video_emb = []
        for i in range(len(videos)):  # one video, one text at a time
            video_emb.append(model.video_embedding(feats[i : i + 1], masks[i : i + 1])[0])
        text_emb = []
        for t in texts:
            layout = plain_text(task.tok, [t], 16)
            text_emb.append(model.text_embedding(layout.ids, layout.mask)[0])
        sim = (torch.stack(text_emb) @ torch.stack(video_emb).T).double().numpy()
        full = task.make_predictor(model).score_matrix(texts, feats, masks)
    gt = [videos.index(r.video) for r in records]
    dual = _evaluate(task, model, "dual")
    expected = retrieval_metrics(sim, gt, ks=(1, 5, 10, 50))
    for key, value in expected.items():
        assert dual[key] == pytest.approx(value, abs=1e-6), key
    assert dual["fusion_pairs"] == 0

    k = 3
    rerank = _evaluate(task, model, "rerank", k)
    ranked = []  # brute force: each text's top k by similarity, by matching score, then the rest
    for i in range(len(texts)):
        short = list(np.argsort(-sim[i], kind="stable")[:k])
        order = sorted(short, key=lambda j: -full[i, j]) + [j for j in np.argsort(-sim[i]) if j not in short]
        ranked.append(order.index(gt[i]) + 1)
    assert rerank["t2v_R1"] == pytest.approx(100 * np.mean(np.array(ranked) <= 1))
    assert rerank["t2v_MeanR"] == pytest.approx(np.mean(ranked))
    assert rerank["fusion_pairs"] == len(texts) * k + len(videos) * k


def test_rerank_with_k_equal_to_the_gallery_equals_the_full_ranking(tiny_args):
    task, model = _task(tiny_args, *VTC, "--vtc_weight", "1")
    full = _evaluate(task, model, "full")
    rerank = _evaluate(task, model, "rerank", k=full["n_videos"] * 10)
    for key in ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MedR", "t2v_MeanR", "v2t_R1", "v2t_R5", "v2t_MeanR"):
        assert rerank[key] == full[key], key


def _text_states(model, layout) -> torch.Tensor:
    """A text's token states as the text embedding reads them (text-only layers, else the fusion layers)."""
    states = model.embed_text(layout.ids, layout.mask)
    if model.config.text_layers == 0:
        states = model.trsfr(states, text_self_mask(layout.mask.bool(), causal=False))
    return states


def test_contrastive_text_pool_mean_projects_the_mean_of_the_valid_token_states(tiny_args):
    """contrastive_text_pool mean: the text embedding is the projection of the mean of the text's token states
    (padding left out, so more padding changes nothing); cls (the default, ALPRO) projects the [CLS] state;
    any other value is a clear error."""
    task, model = _task(tiny_args, *VTC, "--contrastive_text_pool", "mean")
    _, cls_model = _task(tiny_args, *VTC)
    texts = ["a red circle moves left", "two blue squares"]
    short, long = (plain_text(task.tok, texts, n) for n in (task.cfg.size_txt, task.cfg.size_txt + 9))
    with torch.no_grad():
        pooled = model.eval().text_embedding(short.ids, short.mask)
        valid = short.mask.float().unsqueeze(-1)
        mean = (_text_states(model, short) * valid).sum(1) / valid.sum(1)
        assert torch.allclose(pooled, model.vtc.text(mean), atol=1e-6)
        assert torch.allclose(pooled, model.text_embedding(long.ids, long.mask), atol=1e-5)
        first = cls_model.eval().text_embedding(short.ids, short.mask)
        assert torch.allclose(first, cls_model.vtc.text(_text_states(cls_model, short)[:, 0]), atol=1e-6)
    with pytest.raises(ConfigError, match="contrastive_text_pool"):
        _task(tiny_args, *VTC, "--contrastive_text_pool", "max")


def test_vtc_with_hard_negatives_trains_both_losses(tiny_args):
    task, model = _task(tiny_args, *VTC, "--vtc_weight", "1", "--vtm_negatives_from", "vtc")
    stream = task.train_stream()
    random.seed(0)
    torch.manual_seed(0)
    batch = stream.collate_fn([stream.dataset[i] for i in range(4)])
    assert "layout" not in batch  # the matching pairs are mined in the step, from the similarities
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    first = last = None
    for _ in range(10):
        out = stream.step_fn(model, batch)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first or {k: float(v.detach()) for k, v in out.items()}
        last = {k: float(v.detach()) for k, v in out.items()}
    assert last["loss"] == pytest.approx(last["vtm_loss"] + last["vtc_loss"], rel=1e-5)
    assert last["vtc_loss"] < first["vtc_loss"] and last["vtm_loss"] < first["vtm_loss"]
    assert model.vtc.temp.grad is not None


def test_contrastive_modes_need_the_head(tiny_args):
    with pytest.raises(Exception, match="contrastive_dim"):
        _task(tiny_args, "--retrieval_mode", "dual")


def test_one_checkpoint_with_a_vtc_stream_serves_dual_rerank_and_full_retrieval(tiny_args, demo_data):
    from lib.api import Lavender

    entries = [
        {"type": "vtc", "task": "demo-retrieval"},
        {"type": "retrieval", "task": "demo-retrieval", "vtc_weight": 1.0},
    ]
    args = [*tiny_args, *VTC, "--type", "multi-task", "--task", "vtc-and-matching"]
    args += ["--datasets", json.dumps(entries), "--steps_per_epoch", "4"]
    final = run("multi-task", args)
    assert final["vtc_demo-retrieval/test/fusion_pairs"] == 0  # the vtc task evaluates by embeddings
    assert final["retrieval_demo-retrieval/test/fusion_pairs"] > 0
    out = Path(args[args.index("--path_output") + 1])
    api = Lavender.from_pretrained(out / "model", device="cpu")
    assert api.tasks["retrieval"] == ["demo-retrieval", "demo-retrieval"]
    videos = sorted((demo_data / "videos").glob("demo_test_*.mp4"))
    texts = ["a red circle moves left", "two blue squares move up"]
    full = api.scores(texts, videos, mode="full")
    rerank_all = api.scores(texts, videos, mode="rerank", rerank_k=len(videos))
    assert (np.argsort(-full, axis=1) == np.argsort(-rerank_all, axis=1)).all()
    dual = api.scores(texts, videos, mode="dual")
    short = api.retrieve(texts, videos, top_k=3, mode="rerank", rerank_k=3)
    for row, ranked in zip(range(len(texts)), short):  # the dual shortlist, ordered by the matching head
        shortlist = set(np.argsort(-dual[row])[:3])
        assert {j for j, _ in ranked} == shortlist
        assert [j for j, _ in ranked] == sorted(shortlist, key=lambda j: -full[row, j])
    assert api.retrieval_mode(len(videos)) == "full" and api.retrieval_mode(1000) == "rerank"


def test_the_embedding_cache_serves_a_second_run_and_misses_when_the_model_or_the_store_change(
    tiny_args, tmp_path, demo_data
):
    cache = ("--embedding_cache", str(tmp_path / "cache"), "--retrieval_mode", "dual")
    task, model = _task(tiny_args, *VTC, *cache)
    with torch.no_grad():
        first = task.evaluate(model.eval(), "test")
        second = task.evaluate(model, "test")
        assert first["videos_encoded"] == first["n_videos"] > 0
        assert second["videos_encoded"] == 0  # nothing encoded: every embedding came from the cache
        assert {k: v for k, v in second.items() if k.startswith(("t2v", "v2t"))} == {
            k: v for k, v in first.items() if k.startswith(("t2v", "v2t"))
        }
        assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
        model.vtc.proj_video.bias.add_(0.1)  # other weights
        assert task.evaluate(model, "test")["videos_encoded"] == first["n_videos"]
        store = demo_data / "img_demo.tsv"
        os.utime(store, ns=(store.stat().st_atime_ns, store.stat().st_mtime_ns + 10**9))  # a rewritten store
        assert task.evaluate(model, "test")["videos_encoded"] == first["n_videos"]
        assert task.evaluate(model, "test")["videos_encoded"] == 0
