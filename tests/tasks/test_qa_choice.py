"""Multiple-choice QA (lib.tasks.qa_choice): both styles end to end, scores, exact-once accuracy."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from quick_training import freeze_for_speed

from lib.data.annotations import AnnotationError
from lib.demo.synthetic import MC_TEST_ITEMS, MC_TRAIN_ITEMS
from lib.engine.config import Config, load_config
from lib.model import layouts
from lib.model.mlm import logits_at
from lib.tasks.build import build_model
from lib.tasks.common import clip_transform
from lib.tasks.qa_choice import ChoiceTask
from lib.tasks.run import run

# the demo's TGIF-style options are ~10 wordpieces each: 5 options + question fit in 64
SEQUENCE_TXT = ["--size_txt", "64"]


def mc_config(tiny_args: list[str], task: str, *extra: str) -> Config:
    return load_config([*tiny_args, "--type", "qamc", "--task", task, *extra])


def eval_clips(task: ChoiceTask, n: int) -> tuple[list, torch.Tensor]:
    """The first ``n`` test records and their evaluation clips (B, T, 3, H, W)."""
    records = [task.ann["test"][i] for i in range(n)]
    transform = clip_transform(task.cfg, train=False)
    return records, torch.stack([task.store.clip(r.video, task.cfg.size_frame, transform) for r in records])


@pytest.mark.parametrize(
    ("task", "style", "extra"),
    [("demo-mc", "sequence", SEQUENCE_TXT), ("demo-retmc", "retrieval", [])],
)
def test_entry_point_runs_both_styles(tiny_args, tmp_path, tokenizer, task, style, extra):
    argv = [
        *tiny_args,
        "--type",
        "qamc",
        "--task",
        task,
        "--steps_per_epoch",
        "1",
        "--save_model_every_epoch",
        "false",
        *extra,
    ]
    final = run("qamc", argv)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics == pytest.approx(final)
    prefix = f"{task}/test/"
    n = 8 * MC_TEST_ITEMS  # the fixture's 8 test videos
    assert metrics[prefix + "n_items"] == metrics[prefix + "denominator"] == n
    assert metrics[prefix + "acc"] in {100 * k / n for k in range(n + 1)}  # k of the n questions right
    assert ChoiceTask(load_config(argv), tokenizer).style == style  # mc_style "auto": empty question


@pytest.fixture
def model_and_tasks(tiny_args, tokenizer):
    torch.manual_seed(0)
    sequence = ChoiceTask(mc_config(tiny_args, "demo-mc", *SEQUENCE_TXT), tokenizer)
    retrieval = ChoiceTask(mc_config(tiny_args, "demo-retmc"), tokenizer)
    return build_model(sequence.cfg, tokenizer).eval(), sequence, retrieval


def test_option_scores_match_scoring_each_option_alone(model_and_tasks, tokenizer):
    model, sequence, retrieval = model_and_tasks
    true_id, false_id = layouts.true_false_ids(tokenizer)
    with torch.no_grad():
        records, clips = eval_clips(retrieval, 3)
        feat, mask = model.encode_video(clips)
        scores = torch.stack(retrieval.predict_batch(model, feat, mask, records))
        assert scores.shape == (3, 5)
        for i, r in enumerate(records):  # each option alone, with its own copy of the video
            for k, text in enumerate(r.options):
                layout = layouts.vtm(tokenizer, [f"{r.question} {text}".strip()], retrieval.cfg.size_txt)
                logits = logits_at(model, feat[i : i + 1], mask[i : i + 1], layout, layout.mask_index())
                expected = layouts.true_false_logodds(logits[0, 0], true_id, false_id)
                assert scores[i, k].item() == pytest.approx(expected.item(), abs=1e-5)

        records, _ = eval_clips(sequence, 3)  # the same videos: demo-mc and demo-retmc share them
        scores = torch.stack(sequence.predict_batch(model, feat, mask, records))
        layout = layouts.multiple_choice(
            tokenizer, [r.question for r in records], [list(r.options) for r in records], 64
        )
        logits = model(clips, layout.ids, layout.mask)[torch.arange(3), layout.mask_pos]
        assert torch.allclose(scores, logits[:, layouts.choice_ids(tokenizer, 5)].softmax(-1), atol=1e-4)


def test_option_order_shifts_average_every_position(tiny_args, tokenizer):
    """mc_shifts=5 averages the digit softmax over the five cyclic orders (checked against the model run
    on each order by hand), so rotating the given options only rotates the scores; mc_shifts=1 does not
    have that invariance on an untrained model, and a shift count above size_option is a clear error."""
    torch.manual_seed(0)
    cfg = mc_config(tiny_args, "demo-mc", *SEQUENCE_TXT)
    single, shifted = ChoiceTask(cfg, tokenizer), ChoiceTask(cfg.override({"mc_shifts": 5}), tokenizer)
    model = build_model(cfg, tokenizer).eval()
    digits = layouts.choice_ids(tokenizer, 5)
    with torch.no_grad():
        records, clips = eval_clips(shifted, 3)
        feat, mask = model.encode_video(clips)
        scores = torch.stack(shifted.predict_batch(model, feat, mask, records))
        by_hand = torch.zeros(3, 5)
        for s in range(5):
            shown = [[r.options[(j + s) % 5] for j in range(5)] for r in records]
            layout = layouts.multiple_choice(tokenizer, [r.question for r in records], shown, 64)
            probs = model(clips, layout.ids, layout.mask)[torch.arange(3), layout.mask_pos][
                :, digits
            ].softmax(-1)
            for j in range(5):
                by_hand[:, (j + s) % 5] += probs[:, j] / 5
        assert torch.allclose(scores, by_hand, atol=1e-4)
        assert torch.allclose(scores.sum(-1), torch.ones(3), atol=1e-5)

        rotated = [replace(r, options=(*r.options[2:], *r.options[:2])) for r in records]
        again = torch.stack(shifted.predict_batch(model, feat, mask, rotated))
        assert torch.allclose(again, scores.roll(-2, dims=1), atol=1e-4)
        plain = torch.stack(single.predict_batch(model, feat, mask, records))
        plain_rotated = torch.stack(single.predict_batch(model, feat, mask, rotated))
        assert not torch.allclose(plain_rotated, plain.roll(-2, dims=1), atol=1e-3)
    with pytest.raises(ValueError, match="mc_shifts=6: choose 1..5"):
        ChoiceTask(cfg.override({"mc_shifts": 6}), tokenizer)


def test_training_lowers_the_loss_in_both_styles(model_and_tasks):
    model, sequence, retrieval = model_and_tasks
    optimizer = torch.optim.AdamW(freeze_for_speed(model, video_encoder=False), lr=1e-3, weight_decay=0.0)
    model.train()
    for task in (sequence, retrieval):
        stream = task.train_stream()
        batch = stream.collate_fn([stream.dataset[i] for i in range(4)])
        losses = []
        for _ in range(4):
            out = stream.step_fn(model, batch)
            optimizer.zero_grad()
            out["loss"].backward()
            optimizer.step()
            losses.append(out["loss"].item())
        assert losses[-1] < 0.5 * losses[0], (task.style, losses)


def test_missing_video_error_and_size_test(tiny_args, tmp_path, demo_data, tokenizer):
    content = json.loads((demo_data / "txt_demo-retmc.json").read_text())
    content["test"] = content["test"][:8]  # fewer questions in the file than size_test (16)
    content["test"][5]["video"] = "no_such_video"
    path = tmp_path / "txt_bad-mc.json"
    path.write_text(json.dumps(content))
    cfg = mc_config(tiny_args, "bad-mc", "--txt_dir", str(tmp_path), "--size_test", "16")
    with pytest.raises(AnnotationError) as error:
        ChoiceTask(cfg, tokenizer)
    for part in (str(path), "split 'test'", "item 5", "key 'video'", "no_such_video"):
        assert part in str(error.value)

    task = ChoiceTask(cfg.override({"on_bad_item": "skip", "tf_score": "ratio"}), tokenizer)
    assert task.style == "retrieval" and task.ann.skipped == {"train": 0, "val": 0, "test": 1}
    model = build_model(cfg, tokenizer).eval()
    with torch.no_grad():
        test = task.evaluate(model, "test")
        scores = task.predict(model, "test", task.predict_batch)
    assert test["n_items"] == 7 and test["n_skipped"] == 1 and test["denominator"] == 16
    assert test["acc"] <= 50.0 and test["acc"] == pytest.approx(test["acc_given"] * 7 / 16)
    assert len(scores) == 7 and all(s.shape == (5,) for s in scores)


def test_items_per_video_encodes_each_clip_once_and_keeps_every_question(tiny_args, tokenizer):
    """The demo has MC_TRAIN_ITEMS (8) one-sequence questions per train video: with items_per_video=4 a slot
    is one video with 4 of them, the slots cover every question once, and the grouped batch gives each
    question the loss it gets alone with its clip."""
    grouped = ChoiceTask(mc_config(tiny_args, "demo-mc", *SEQUENCE_TXT, "--items_per_video", "4"), tokenizer)
    single = ChoiceTask(mc_config(tiny_args, "demo-mc", *SEQUENCE_TXT), tokenizer)
    slots, items = grouped.train_stream().dataset, single.train_stream().dataset
    records = grouped.ann["train"]
    per_video = len(records) // len({r.video for r in records})
    assert per_video == MC_TRAIN_ITEMS and len(slots) == len(records) // 4 and len(items) == len(records)
    seen = sorted((r.video, r.options, r.answer) for i in range(len(slots)) for r in slots[i]["records"])
    assert seen == sorted((r.video, r.options, r.answer) for r in records)
    assert all({r.video for r in slots[i]["records"]} == {slots[i]["id"]} for i in range(len(slots)))

    torch.manual_seed(0)
    model = build_model(single.cfg, tokenizer).eval()
    batch = grouped.collate_train([slots[0], slots[1]])
    assert batch["video"].shape[0] == 2 and batch["row_video"].tolist() == [0] * 4 + [1] * 4
    with torch.no_grad():
        out = grouped.step(model, batch)
        alone = [single.step(model, single.collate_train([items[i]])) for i in range(8)]
    assert [r.video for r in records[:8]] == [slots[0]["id"]] * 4 + [slots[1]["id"]] * 4
    mean_alone = torch.stack([a["loss"] for a in alone]).mean().item()
    assert out["loss"].item() == pytest.approx(mean_alone, rel=1e-4)
    assert out["acc"].item() == pytest.approx(torch.stack([a["acc"] for a in alone]).mean().item())
