"""The main job end to end, shortened: real videos → extractor → TSV → one multi-task model → report.

The shortened demo (`--quick`) must learn: each task's test metric far above its chance level. The full
`make demo` run's numbers are in BENCHMARKS.md and the report it writes.
"""

from __future__ import annotations

import argparse
import json

import pytest

from lib.demo import budget
from lib.demo import run as demo
from lib.demo.report import ROWS, caption_chance
from lib.demo.synthetic import MC_TEST_ITEMS
from lib.tasks.run import prepare

# How far above chance the shortened demo must be on its 60 test videos, per metric: (at least this multiple
# of chance, and at least chance + this margin). --quick is fp32 with one fixed length (240 steps, 3 fusion
# layers, 32 px), so every machine kind trains the same steps. Measured on a 2-core Xeon (Sapphire Rapids),
# 2.7 min for this test (AVX2-only estimate ~4.5 min): R@10 0.383 (chance 0.167; 60 videos, one standard
# deviation at chance 0.048), QA 0.720 (0.323), retrieval-style MC 0.377 (0.200; 300 questions, SD 0.023),
# CIDEr 4.20 (0.71). R@1 (0.050) and one-sequence MC (0.250) need the full demo's length: reported only.
FAR_ABOVE_CHANCE = {
    "retrieval_demo-retrieval/test/t2v_R10": (1.8, 0.10),
    "qaoe_demo-qa/test/acc": (1.5, 0.20),
    "qamc_demo-retmc/test/acc": (1.5, 0.10),
    "captioning_demo-captioning/test/CIDEr": (3.0, 1.0),
}


@pytest.mark.slow
def test_a_shortened_demo_learns_every_task_and_writes_its_report(tmp_path, capsys):
    """CI's learning check: `--quick` (240 train videos, the Swin's attribute pretraining, 240 multi-task
    steps on 32-px frames in fp32 on every machine kind) is far above chance."""
    out = tmp_path / "out"
    argv = ["--quick", "--data", str(tmp_path / "data"), "--out", str(out)]
    assert demo.main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    # --quick fixes its length (and fp32), so every machine kind trains the same steps
    steps = demo.QUICK["size_epoch"] * demo.QUICK["steps_per_epoch"]
    assert summary["training_length"] == {
        "size_epoch": demo.QUICK["size_epoch"],
        "source": "--size_epoch",
        "trained_epochs": demo.QUICK["size_epoch"],
        "trained_steps": steps,
    }
    metrics = summary["metrics"]
    for task, metric, _, _ in ROWS:
        if metric != "METEOR":  # METEOR needs Java; everything else is always reported
            assert f"{task}/test/{metric}" in metrics
    learned = {}
    for key, (ratio, margin) in FAR_ABOVE_CHANCE.items():
        value, chance = metrics[key]["value"], metrics[key]["chance"]
        learned[key] = (value, chance, value >= max(ratio * chance, chance + margin))
    assert all(ok for _, _, ok in learned.values()), learned
    assert metrics["retrieval_demo-retrieval/test/t2v_R1"]["chance"] == pytest.approx(1 / 60)
    report = (out / "report.md").read_text()
    assert "| metric | test | chance | target |" in report and "![curves](curves.png)" in report
    for png in ("curves.png", "examples.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    printed = capsys.readouterr().out
    assert "retrieval text→video R@1" in printed and "report:" in printed
    # a second run reuses the data, the Swin pretraining and the finished run (no retraining)
    assert demo.main(argv) == 0
    printed = capsys.readouterr().out
    assert "finished run found" in printed and "reusing" in printed


@pytest.mark.slow
def test_demo_fits_its_training_to_the_budget(tmp_path, capsys):
    """Without --size_epoch the demo times real steps and a validation pass, then trains the epochs that fit
    (at least one): a budget already spent gives one epoch; an interrupted run keeps the length it chose."""
    out = tmp_path / "out"
    argv = ["--quick", "--data", str(tmp_path / "data"), "--out", str(out), "--n_train", "30",
            "--n_val", "6", "--n_test", "6", "--steps_per_epoch", "4", "--budget_min", "0.01"]  # fmt: skip
    args = demo.parse_args(argv)
    args.size_epoch = None  # --quick fixes the length; this test asks the budget
    data = demo.build_data(args)
    plan = demo.fit_epochs(args, data, out, None, started=demo.time.perf_counter())
    assert plan["size_epoch"] == 1 and plan["steps"] == 4 and plan["max_epochs"] >= 1
    assert plan["last_epoch_steps"] == 4
    assert plan["step_s"] > 0 and plan["eval_s"] > 0 and "budget" in plan["source"]
    assert plan["time_budget_s"] == 1.0  # the budget is spent: the run re-fits to stop as soon as it can
    assert "ms per step" in capsys.readouterr().out
    # the plan's budget reaches the run as its TimeBudget callback, recorded beside the run for a resume
    budgeted = argparse.Namespace(**vars(args), time_budget_s=5.0)
    assert [c.seconds for c in demo.run_callbacks(budgeted, tmp_path / "budgeted")] == [5.0]
    assert budget.recorded_budget(tmp_path / "budgeted") == 5.0
    # the test evaluation is planned as each task's timed val pass times its test/val items: MC_TEST_ITEMS
    # questions of each multiple-choice kind per test video and one per val video (here 6 videos each)
    _, _, _, tasks = prepare("multi-task", demo.run_argv(args, data, tmp_path / "tasks"))
    ratios = {task.name.split("_")[-1]: budget.test_to_val_items(task, args) for task in tasks}
    assert ratios == {
        "demo-retrieval": 1,
        "demo-qa": 1,
        "demo-mc": MC_TEST_ITEMS,
        "demo-retmc": MC_TEST_ITEMS,
        "demo-captioning": 1,
    }

    def length(usable_s: float, steps_per_epoch: int = 100, max_epochs: int = 8, stretch: bool = True):
        return budget.plan_length(usable_s / budget.SAFETY, 0.5, steps_per_epoch, 10.0, max_epochs, stretch)

    # 905 usable seconds at 0.5 s/step with 10 s evaluations: 15 whole 100-step epochs (60 s each) fit ...
    assert length(905, max_epochs=32, stretch=False) == (15, 100, 100)
    assert length(905, max_epochs=32) == (15, 100, 100)  # 5 s left over: not a step per epoch
    # ... at most max_epochs of the configured length; planned in steps: a remainder is a shorter last epoch
    assert length(905) == (8, 100, 100)
    assert length(181) == (3, 100, 100)
    assert length(208) == (4, 100, 36)  # 336 steps: 208 - 4 x 10 = 168 s of steps
    assert length(208, stretch=False) == (3, 100, 100)  # a fixed --steps_per_epoch: whole epochs only
    # less than one epoch fits: one shorter epoch, never below MIN_STEPS (or the configured length)
    assert length(45.2) == (1, 70, 70)  # (45.2 - 10) / 0.5
    assert length(-5) == (1, budget.MIN_STEPS, budget.MIN_STEPS)
    assert length(-5, steps_per_epoch=4) == (1, 4, 4)
    # fit_steps: the most steps whose training and evaluations fit, the last epoch possibly shorter
    assert budget.fit_steps(208, 0.5, 100, 10.0, 8) == 336
    assert budget.split_steps(336, 100) == (4, 36) and budget.split_steps(300, 100) == (3, 100)
    # an interrupted run (args.json, its recorded budget, a checkpoint) keeps its length, measures nothing
    (out / "run" / "checkpoints" / "step_00000002").mkdir(parents=True)
    (out / "run" / "args.json").write_text(json.dumps({"size_epoch": 3}))
    budget.record_budget(out / "run", 500.0)
    again = demo.fit_epochs(args, data, out, None, started=demo.time.perf_counter())
    assert again == {
        "size_epoch": 3, "steps_per_epoch": None, "time_budget_s": 500.0, "source": "the interrupted run"
    }  # fmt: skip


def test_swin_pretraining_writes_loadable_weights_and_is_reused(tmp_path, capsys, minilm_dir):
    import torch
    from safetensors.torch import load_file

    from lib.demo.backbone import pretrain_video_swin
    from lib.demo.synthetic import ATTRIBUTES, make_demo_dataset
    from lib.engine.config import load_config
    from lib.model.encoders.video import VideoEncoder
    from lib.tasks.build import build_model, model_config

    data = tmp_path / "data"
    make_demo_dataset(data, seed=0, n_train=8, n_val=4, n_test=2, progress=False)
    cfg = load_config(["--config", str(demo.CONFIG), "--data_dir", str(data)])
    weights = pretrain_video_swin(cfg, data, tmp_path / "backbone", steps=4, batch_size=4)
    state = load_file(weights)
    torch.manual_seed(0)  # the initialisation pretrain_video_swin starts from (seed 0)
    initial = VideoEncoder(model_config(cfg)).swin.state_dict()
    assert set(state) == {f"enc_img.swin.{k}" for k in initial}
    assert any(not torch.equal(state[f"enc_img.swin.{k}"], v) for k, v in initial.items())  # it trained
    record = json.loads((tmp_path / "backbone" / "swin.json").read_text())
    assert record["request"]["recipe"]["steps"] == 4 and set(record["val_accuracy"]) == set(ATTRIBUTES)
    assert all(0.0 <= a <= 1.0 for a in record["val_accuracy"].values())
    assert "held-out attribute accuracy" in capsys.readouterr().out
    # the multi-task model starts from it (vis_backbone_ckpt): Swin from the file, text from MiniLM
    model = build_model(
        load_config(["--config", str(demo.CONFIG), "--data_dir", str(data), *demo.init_argv(weights)])
    )
    for key, value in state.items():
        assert torch.equal(model.state_dict()[key], value), key
    # the same request is reused; another one trains again
    mtime = weights.stat().st_mtime_ns
    assert pretrain_video_swin(cfg, data, tmp_path / "backbone", steps=4, batch_size=4) == weights
    assert weights.stat().st_mtime_ns == mtime and "reusing" in capsys.readouterr().out
    pretrain_video_swin(cfg, data, tmp_path / "backbone", steps=3, batch_size=4)
    assert json.loads((tmp_path / "backbone" / "swin.json").read_text())["request"]["recipe"]["steps"] == 3


def test_quick_is_fp32_with_one_fixed_length():
    """--quick trains in fp32 for its fixed length on every machine kind; explicit lengths and overrides win
    (an override after --quick's own comes later on the command line)."""
    args = demo.parse_args(["--quick"])
    assert (args.size_epoch, args.steps_per_epoch) == (
        demo.QUICK["size_epoch"],
        demo.QUICK["steps_per_epoch"],
    )
    assert args.overrides == demo.QUICK_OVERRIDES and args.overrides[-2:] == ["--precision", "fp32"]
    args = demo.parse_args(
        ["--quick", "--size_epoch", "2", "--steps_per_epoch", "7", "--", "--precision", "bf16"]
    )
    assert (args.size_epoch, args.steps_per_epoch, args.n_train) == (2, 7, demo.QUICK["n_train"])
    assert args.overrides == [*demo.QUICK_OVERRIDES, "--precision", "bf16"]


def _caption_annotations(path, train: list[str], test: list[str]) -> None:
    rows = {
        "train": [{"video": f"tr{i}", "caption": c} for i, c in enumerate(train)],
        "test": [{"video": f"te{i}", "caption": c} for i, c in enumerate(test)],
    }
    (path / "txt_demo-captioning.json").write_text(json.dumps(rows))


def test_caption_chance_scores_random_training_captions_against_the_test_references(tmp_path):
    """The captioning chance level is a video-blind captioner's score, averaged over several draws."""
    test = [
        "a small red circle moves left",
        "two large blue squares stay still",
        "a large green cross moves up",
    ]
    # a training pool that shares no word with the test captions scores nothing
    _caption_annotations(tmp_path, ["one tiny pink star spins"] * 3, test)
    chance = caption_chance(tmp_path)
    assert chance[("captioning_demo-captioning", "Bleu_1")] == pytest.approx(0.0, abs=1e-6)
    assert chance[("captioning_demo-captioning", "CIDEr")] == pytest.approx(0.0, abs=1e-6)
    # a pool holding only the test captions: each draw is right for one video in three (BLEU counts over the
    # corpus, so BLEU-4 sits between that and a perfect 1), and the same data gives the same chance level
    _caption_annotations(tmp_path, test, test)
    chance = caption_chance(tmp_path)
    assert 0.2 < chance[("captioning_demo-captioning", "Bleu_4")] < 0.9
    assert caption_chance(tmp_path) == chance
    one_draw = caption_chance(tmp_path, draws=1)
    assert one_draw != chance
