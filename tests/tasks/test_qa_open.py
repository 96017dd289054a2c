"""Open-ended QA (lib.tasks.qa_open): the entry point, training, candidate scoring, exact-once accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quick_training import freeze_for_speed

from lib.data.annotations import AnnotationError
from lib.engine.config import Config, ConfigError, load_config
from lib.model.layouts import IGNORE_INDEX
from lib.tasks.build import build_model
from lib.tasks.common import clip_dataset, eval_collate
from lib.tasks.qa_open import OpenQATask

REPO = Path(__file__).resolve().parents[2]

# Hand-made file: the answer is given away by the question, so a tiny model can learn it in a few steps.
HAND_ITEMS = [
    ("what is the dessert?", "ice cream", "food"),
    ("what color is the circle?", "red", "color"),
    ("what does the man wear?", "blue jeans", "clothes"),
    ("how many dogs are there?", "two", "count"),
]
# Distractors include a piece of a multi-piece answer ("cream"). Not "jeans" or "blue": the one-[MASK]
# layout, never trained for "what does the man wear?", may give either a probability that beats the mean
# per-piece log-probability of "blue jeans" (the known limit of length-normalised candidate scoring).
HAND_VOCAB = ["ice cream", "red", "blue jeans", "two", "green", "hot dog", "cream"]


def qa_config(tiny_args: list[str], *extra: str) -> Config:
    return load_config([*tiny_args, "--type", "qaoe", "--task", "demo-qa", *extra])


def write_annotations(folder: Path, task: str, content: dict) -> Path:
    path = folder / f"txt_{task}.json"
    path.write_text(json.dumps(content))
    return path


def hand_items(questions=HAND_ITEMS) -> list[dict]:
    return [
        {"video": f"demo_train_{i:05d}", "question": q, "answer": i, "answer_text": a, "type": t}
        for i, (q, a, t) in enumerate(questions)
    ]


def evaluate(task: OpenQATask, model, split: str) -> dict[str, float]:
    model.eval()
    with torch.no_grad():
        return task.evaluate(model, split)


def overfit(task, model, steps: int, lr: float) -> list[float]:
    """Train on the first batch of the task's training stream for ``steps`` steps; the losses.

    The two vocabulary-sized matrices (text embeddings, MLM decoder) stay frozen: their dense gradients
    and optimizer updates would dominate the test's time."""
    stream = task.train_stream()
    items = [stream.dataset[i] for i in range(min(len(stream.dataset), stream.batch_size))]
    optimizer = torch.optim.AdamW(freeze_for_speed(model, video_encoder=False), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        out = stream.step_fn(model, stream.collate_fn(items))
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    return losses


@pytest.mark.distributed
def test_entry_point_on_two_ranks_counts_every_item_once(tiny_args, tmp_path, tokenizer):
    """main_qaoe_mlm.py under torchrun (2 CPU ranks): one training step, then the test split shared by the
    ranks. Re-evaluating the saved model in ONE process must give the same numbers."""
    config = tmp_path / "qa.json"
    settings = {"type": "qaoe", "task": "demo-qa", "steps_per_epoch": 1, "size_batch": 8, "size_test": 50}
    config.write_text(json.dumps({**settings, "save_model_every_epoch": False}))
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "main_qaoe_mlm.py"]
    done = subprocess.run(
        [*launch, "--config", str(config), *tiny_args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    prefix = "demo-qa/test/"
    assert metrics[prefix + "n_items"] == 40  # 8 test videos x 5 question types
    assert metrics[prefix + "denominator"] == 50  # size_test: the official size, not the items present
    assert 0 <= metrics[prefix + "acc"] <= metrics[prefix + "acc_top5"] <= 80
    types = {k[len(prefix + "acc_type/") :] for k in metrics if k.startswith(prefix + "acc_type/")}
    assert types == {"color", "shape", "size", "direction", "count"}
    assert metrics[prefix + "n_multi_piece"] == 0 and metrics[prefix + "n_skipped"] == 0

    cfg = qa_config(tiny_args, "--size_test", "50", "--path_ckpt", str(tmp_path / "out" / "model"))
    alone = evaluate(OpenQATask(cfg, tokenizer), build_model(cfg, tokenizer), "test")
    assert {prefix + k: v for k, v in alone.items()} == pytest.approx(metrics)


def test_batches_are_grouped_by_answer_piece_count(tiny_args, tmp_path, tokenizer):
    write_annotations(tmp_path, "hand-qa", {"train": hand_items(), "vocab": HAND_VOCAB})
    task = OpenQATask(qa_config(tiny_args, "--txt_dir", str(tmp_path), "--task", "hand-qa"), tokenizer)
    items = [task.train_stream().dataset[i] for i in range(4)]
    batch = task.collate_train(items)
    by_k = {layout.n_masks: (rows.tolist(), layout) for rows, layout in batch["groups"]}
    assert sorted(by_k) == [1, 2]
    assert by_k[1][0] == [1, 3] and by_k[2][0] == [0, 2]  # red, two | ice cream, blue jeans
    rows, layout = by_k[2]
    for row, (_, answer, _) in enumerate(HAND_ITEMS[i] for i in rows):
        at = layout.mask_index()[row]
        assert (layout.ids[row, at] == tokenizer.mask_token_id).all()
        assert layout.labels[row, at].tolist() == tokenizer(answer, add_special_tokens=False)["input_ids"]
        assert (layout.labels[row] != IGNORE_INDEX).sum() == 2
    # candidates: every vocab answer, grouped by piece count for one fusion pass per count
    assert task.candidates == HAND_VOCAB
    assert {k: len(index) for k, (index, _) in task.candidate_groups.items()} == {1: 4, 2: 3}


def test_overfitting_learns_multi_piece_answers(tiny_args, tmp_path, tokenizer):
    items = hand_items()
    write_annotations(tmp_path, "hand-qa", {"train": items, "test": items, "vocab": HAND_VOCAB})
    cfg = qa_config(tiny_args, "--txt_dir", str(tmp_path), "--task", "hand-qa")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    task = OpenQATask(cfg, tokenizer)
    losses = overfit(task, model, steps=40, lr=1e-3)
    assert sum(losses[-5:]) / 5 < 0.3 * losses[0], losses

    metrics = evaluate(task, model, "test")  # candidates: multi-piece answers are predictable
    assert metrics["n_multi_piece"] == 2 and metrics["n_out_of_space"] == 0
    assert metrics["acc_type/food"] == 100.0 and metrics["acc_type/clothes"] == 100.0, (metrics, losses)
    top5 = task.predict(model.eval(), "test", task.predict_batch)
    assert len(top5) == 4 and all(len(ranked) == 5 for ranked in top5)
    assert top5[0][0] == "ice cream" and top5[2][0] == "blue jeans"

    reference = OpenQATask(cfg.override({"qa_answer_space": "vocab"}), tokenizer)
    metrics = evaluate(reference, model, "test")  # arg-max over the vocabulary: one wordpiece only
    assert metrics["n_out_of_space"] == 2
    assert metrics["acc_type/food"] == 0.0 and metrics["acc_type/clothes"] == 0.0
    assert metrics["acc"] <= 50.0


def test_accuracy_counts_every_item_once_over_size_test(tiny_args, tmp_path, demo_data, tokenizer):
    content = json.loads((demo_data / "txt_demo-qa.json").read_text())
    content["test"][3]["video"] = "no_such_video"
    path = write_annotations(tmp_path, "bad-qa", content)
    cfg = qa_config(tiny_args, "--txt_dir", str(tmp_path), "--task", "bad-qa", "--size_test", "80")
    with pytest.raises(AnnotationError) as error:
        OpenQATask(cfg, tokenizer)
    for part in (str(path), "split 'test'", "item 3", "key 'video'", "no_such_video"):
        assert part in str(error.value)

    task = OpenQATask(cfg.override({"on_bad_item": "skip"}), tokenizer)
    assert task.ann.skipped["test"] == 1 and len(task.ann["test"]) == 39
    dataset = clip_dataset(task.cfg, task.store, task.ann["test"], train=False)
    batch = eval_collate([dataset[i] for i in range(7)])  # 4 questions left on video 0, then video 1
    assert batch["video"].shape[0] == 2 and batch["row_video"].tolist() == [0, 0, 0, 0, 1, 1, 1]
    model = build_model(cfg, tokenizer)
    test = evaluate(task, model, "test")
    assert test["n_items"] == 39 and test["n_skipped"] == 1 and test["denominator"] == 80
    assert test["acc"] <= 50.0 and test["acc"] == pytest.approx(test["acc_given"] * 39 / 80)
    val = evaluate(task, model, "val")  # size_test is the official TEST size: not applied to val
    assert val["n_items"] == val["denominator"] == 30


def test_fill_in_the_blank_questions(tiny_args, tmp_path, tokenizer):
    blanks = [
        ("someone eats [MASK] in the park.", "ice cream", "fib"),
        ("a [MASK] runs across the street.", "dog", "fib"),
        ("she paints the [MASK] on the wall.", "red door", "fib"),
        ("he plays [MASK] with friends.", "football", "fib"),
    ]
    items = hand_items(blanks)
    bad = [*items[:2], {**items[2], "question": "no blank here"}, items[3]]
    write_annotations(tmp_path, "fib-qa", {"train": items, "test": bad})
    cfg = qa_config(tiny_args, "--txt_dir", str(tmp_path), "--task", "fib-qa")
    with pytest.raises(AnnotationError, match=r"split 'test', item 2, key 'question'"):
        OpenQATask(cfg, tokenizer)
    task = OpenQATask(cfg.override({"on_bad_item": "skip"}), tokenizer)
    assert task.fill_blank and task.ann.skipped["test"] == 1
    assert task.candidates == ["ice cream", "dog", "red door", "football"]  # no vocab: train answers

    batch = task.collate_train([task.train_stream().dataset[i] for i in range(4)])
    rows, layout = next((r, lay) for r, lay in batch["groups"] if lay.n_masks == 2)
    row = rows.tolist().index(0)
    text = tokenizer.decode(layout.ids[row][layout.mask.bool()[row]])
    assert text == "[CLS] someone eats [MASK] [MASK] in the park. [SEP]"  # the blank stays in place

    model = build_model(cfg, tokenizer)
    loss = task.step(model, batch)["loss"]
    assert torch.isfinite(loss) and loss.item() > 0
    metrics = evaluate(task, model, "test")
    assert metrics["n_items"] == 3 and metrics["denominator"] == 4


def test_multi_task_weights_and_swin_drop_path_come_from_the_config(tiny_args, tokenizer):
    from lib.tasks.run import build_tasks

    qa = {"type": "qaoe", "task": "demo-qa", "task_weight": 3}
    datasets = json.dumps([qa, {"type": "captioning", "task": "demo-captioning"}])
    cfg = load_config([*tiny_args, "--type", "multi-task", "--datasets", datasets, "--vis_drop_path", "0.05"])
    streams = [s for t in build_tasks(cfg, tokenizer) for s in t.train_streams()]
    weights = [(s.name, s.weight) for s in streams]
    assert weights == [("qaoe_demo-qa", 3.0), ("captioning_demo-captioning", 1.0)]
    assert build_model(cfg, tokenizer).config.swin_drop_path == 0.05


def test_resize_on_device_leaves_train_crops_for_the_model_to_resize(tiny_args, tokenizer):
    """resize_on device: the train loader returns crops at the stored resolution (the demo's 64 px frames)
    and the model, built with frame_size = size_img, resizes the batch; eval crops are resized in the loader.
    resize_on is one setting for the whole run, and a task cannot ask the model for another size."""
    from lib.tasks.run import build_tasks

    worker = OpenQATask(qa_config(tiny_args, "--size_img", "32", "--resize_on", "worker"), tokenizer)
    cfg = qa_config(tiny_args, "--size_img", "32", "--resize_on", "device")
    device = OpenQATask(cfg, tokenizer)
    items = [device.train_stream().dataset[i] for i in range(2)]
    batch = device.collate_train(items)
    assert batch["video"].shape[-2:] == (64, 64) and batch["video"].dtype == torch.uint8
    worker_batch = worker.collate_train([worker.train_stream().dataset[i] for i in range(2)])
    assert worker_batch["video"].shape[-2:] == (32, 32)
    model = build_model(cfg, tokenizer).eval()
    assert model.config.frame_size == 32 and build_model(worker.cfg, tokenizer).config.frame_size is None
    with torch.no_grad():
        loss = device.step(model, batch)["loss"]
        feat, _ = model.encode_video(batch["video"])
        small, _ = model.encode_video(batch["video"][..., ::2, ::2].contiguous())  # 32 px: not resized
    assert torch.isfinite(loss) and feat.shape == small.shape
    eval_items = clip_dataset(cfg, device.store, device.ann["test"], train=False)
    assert eval_items[0]["video"].shape[-2:] == (32, 32) and "resize_to" not in eval_items[0]

    multi = [*tiny_args, "--type", "multi-task", "--size_img", "32", "--resize_on", "device"]
    qa = {"type": "qaoe", "task": "demo-qa"}
    with pytest.raises(ConfigError, match="resize_on applies to the whole run"):
        build_tasks(
            load_config([*multi, "--datasets", json.dumps([{**qa, "resize_on": "worker"}])]), tokenizer
        )
    with pytest.raises(
        ConfigError, match="sets size_img 64, but the model resizes train crops to the run's 32"
    ):
        build_tasks(load_config([*multi, "--datasets", json.dumps([{**qa, "size_img": 64}])]), tokenizer)
    with pytest.raises(ConfigError, match="resize_on"):
        qa_config(tiny_args, "--resize_on", "gpu")


def test_items_per_video_encodes_each_clip_once_and_keeps_every_question(tiny_args, tokenizer):
    """items_per_video=5: a slot is one video with its (5) questions; the slots cover every question exactly
    once, and the grouped batch gives each question the loss it gets in a batch of one question per clip."""
    grouped = OpenQATask(qa_config(tiny_args, "--items_per_video", "5"), tokenizer)
    single = OpenQATask(qa_config(tiny_args), tokenizer)
    slots, items = grouped.train_stream().dataset, single.train_stream().dataset
    records = grouped.ann["train"]
    assert len(slots) == len({r.video for r in records}) < len(items) == len(records)
    seen = [(r.video, r.question) for i in range(len(slots)) for r in slots[i]["records"]]
    assert sorted(seen) == sorted((r.video, r.question) for r in records)  # every question once
    assert all({r.video for r in slots[i]["records"]} == {slots[i]["id"]} for i in range(len(slots)))

    model = build_model(qa_config(tiny_args), tokenizer).eval()  # eval: no dropout, same clip transform
    batch = grouped.collate_train([slots[0], slots[1]])
    assert batch["video"].shape[0] == 2 and sum(len(rows) for rows, _ in batch["groups"]) == 10
    with torch.no_grad():
        loss = grouped.step(model, batch)["loss"]
        per_question = [single.step(model, single.collate_train([items[i]]))["loss"] for i in range(10)]
    # the first ten records are the two videos' questions (file order) and every answer is one wordpiece
    assert [r.video for r in records[:10]] == [slots[0]["id"]] * 5 + [slots[1]["id"]] * 5
    assert loss.item() == pytest.approx(torch.stack(per_question).mean().item(), rel=1e-4)

    with pytest.raises(ConfigError, match="items_per_video"):
        from lib.tasks.caption import CaptionTask

        CaptionTask(load_config([*tiny_args, "--type", "captioning", "--task", "demo-captioning",
                                 "--items_per_video", "2"]), tokenizer).train_stream()  # fmt: skip
