"""Captioning (lib.tasks.caption): the entry point, the training layout and loss, exact-once evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from quick_training import freeze_for_speed

from lib.engine.config import Config, load_config
from lib.metrics.caption import METRIC_KEYS, coco_scores, java_available
from lib.model.layouts import IGNORE_INDEX
from lib.tasks.build import build_model
from lib.tasks.caption import CaptionTask
from lib.tasks.run import run


def caption_config(tiny_args: list[str], *extra: str) -> Config:
    return load_config([*tiny_args, "--type", "captioning", "--task", "demo-captioning", *extra])


def first_batch(task: CaptionTask) -> dict:
    stream = task.train_stream()
    return stream.collate_fn([stream.dataset[i] for i in range(stream.batch_size)])


def test_entry_point_trains_decodes_and_scores(tiny_args, demo_data):
    # the run scores val (end of training) and test; Java's METEOR has its own test below
    args = ["--task", "demo-captioning", "--steps_per_epoch", "2", "--beam_size", "2"]
    final = run("captioning", [*tiny_args, *args, "--caption_eval_backend", "python"])
    out = Path(tiny_args[tiny_args.index("--path_output") + 1])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == pytest.approx(final)
    expected = {"Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr", "n_videos"}
    assert expected <= {k.removeprefix("demo-captioning/test/") for k in metrics}
    assert metrics["demo-captioning/test/n_videos"] == 8
    annotations = json.loads((demo_data / "txt_demo-captioning.json").read_text())
    for split in ("val", "test"):  # validated during training, tested at the end
        predictions = json.loads((out / f"captions_{split}.json").read_text())
        assert [p["video"] for p in predictions] == [a["video"] for a in annotations[split]]
        assert all(isinstance(p["caption"], str) and p["score"] <= 0 for p in predictions)
    losses = [
        r["loss"]
        for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())
        if r["kind"] == "train"
    ]
    assert losses and all(math.isfinite(loss) for loss in losses)


def test_training_masks_caption_tokens_and_supervises_only_them(tiny_args, tokenizer):
    task = CaptionTask(caption_config(tiny_args, "--p_mask", "0.3"), tokenizer)
    layout = first_batch(task)["layout"]
    assert layout.attn == "seq2seq" and layout.ids.shape == (4, 16)
    supervised = layout.labels != IGNORE_INDEX
    assert (layout.ids[supervised] == tokenizer.mask_token_id).all()
    assert (supervised.sum(1) >= 1).all()
    assert not (layout.labels[supervised] == tokenizer.pad_token_id).any()
    # [SEP] is maskable: over many batches it is supervised somewhere (the model learns where to stop)
    seen = torch.cat([first_batch(task)["layout"].labels for _ in range(20)])
    assert (seen == tokenizer.sep_token_id).any()


def test_the_loss_is_cross_entropy_at_the_masked_positions_from_head_rows_for_them_only(tiny_args, tokenizer):
    cfg = caption_config(tiny_args)
    task = CaptionTask(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    batch = first_batch(task)
    layout = batch["layout"]
    head_rows = []
    head = model.mlm_logits
    model.mlm_logits = lambda hidden, *a: head_rows.append(hidden.shape[0]) or head(hidden, *a)
    with torch.no_grad():
        loss = task.step(model, batch)["loss"]
        del model.mlm_logits
        full = model(batch["video"], layout.ids, layout.mask, attn="seq2seq")  # head on every position
    supervised = layout.labels != IGNORE_INDEX
    assert head_rows == [int(supervised.sum())]
    assert loss.item() == pytest.approx(
        F.cross_entropy(full[supervised], layout.labels[supervised]).item(), rel=1e-5
    )


def test_overfitting_one_batch_lowers_the_loss(tiny_args, tokenizer):
    cfg = caption_config(tiny_args)
    task = CaptionTask(cfg, tokenizer)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    optimizer = torch.optim.AdamW(freeze_for_speed(model), lr=1e-3, weight_decay=0.0)
    stream = task.train_stream()
    items = [stream.dataset[i] for i in range(4)]
    losses = []
    for _ in range(25):
        out = task.step(model, task.collate_train(items))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


@pytest.fixture
def three_video_task(tiny_args, tokenizer, demo_data, tmp_path) -> CaptionTask:
    """A test split of three videos, the first with two captions (items), batches of two videos."""
    data = json.loads((demo_data / "txt_demo-captioning.json").read_text())
    test = [*data["test"][:3], {"video": data["test"][0]["video"], "caption": "a second reference"}]
    (tmp_path / "txt_demo-twice.json").write_text(json.dumps({"test": test}))
    cfg = caption_config(tiny_args, "--task", "demo-twice", "--txt_dir", str(tmp_path), "--size_batch", "2")
    return CaptionTask(cfg, tokenizer)


def evaluate(task: CaptionTask, backend: str) -> dict[str, float]:
    task.backend = backend
    torch.manual_seed(0)
    model = build_model(task.cfg, task.tok).eval()
    with torch.no_grad():
        return task.evaluate(model, "test")


def test_evaluation_decodes_each_video_once_and_scores_it_against_all_its_captions(three_video_task):
    metrics = evaluate(three_video_task, "python")  # Java is not the point here
    predictions = json.loads((Path(three_video_task.cfg.path_output) / "captions_test.json").read_text())
    test = three_video_task.ann["test"]
    videos = [r.video for r in test][:3]
    assert [p["video"] for p in predictions] == videos and metrics["n_videos"] == 3
    references = {v: [r.text for r in test if r.video == v] for v in videos}
    assert references[videos[0]][1] == "a second reference"
    expected = coco_scores({p["video"]: p["caption"] for p in predictions}, references, backend="python")
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert three_video_task.eval_splits() == ["test"] and three_video_task.train_stream() is None


@pytest.mark.skipif(not java_available(), reason="needs a working java for pycocoevalcap")
def test_with_java_the_scores_are_the_coco_toolkit_s_including_meteor(three_video_task):
    metrics = evaluate(three_video_task, "pycocoevalcap")
    assert set(METRIC_KEYS) <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in METRIC_KEYS if k != "CIDEr")


def test_splits_other_than_test_use_the_validation_backend(three_video_task, monkeypatch):
    """caption_val_backend (e.g. python: no METEOR Java start-up per validation pass) applies to every split
    but test; by default both use caption_eval_backend."""
    import lib.tasks.caption as caption_module

    used = []
    monkeypatch.setattr(caption_module, "coco_scores", lambda p, r, backend: used.append(backend) or {})
    task = three_video_task
    task.ann.splits["val"] = task.ann["test"]
    model = build_model(task.cfg, task.tok).eval()
    assert task.val_backend == task.backend == "auto"
    task.val_backend = "python"
    with torch.no_grad():
        task.evaluate(model, "val")
        task.evaluate(model, "test")
    assert used == ["python", "auto"]
    cfg = caption_config(["--caption_eval_backend", "pycocoevalcap", "--caption_val_backend", "python"])
    assert (cfg.caption_eval_backend, cfg.caption_val_backend) == ("pycocoevalcap", "python")
