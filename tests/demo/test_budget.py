"""The demo's time budget (lib.demo.budget.TimeBudget) on real runs of tests/engine/toy_train.py: after every
epoch the run's length is re-fitted, to the step, to the pace measured in the run."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from engine_runs import BASE_ARGS, run_toy  # noqa: E402

from lib.demo.budget import TimeBudget  # noqa: E402

BUDGET_TOY = Path(__file__).with_name("budget_toy.py")


def run_budgeted(out: Path, *args: str):
    return run_toy(out, *args, script=BUDGET_TOY)


def test_a_time_budget_shortens_a_run_to_the_steps_that_fit(tmp_path):
    run = run_budgeted(tmp_path, *BASE_ARGS, "--size_batch", "8", "--size_epoch", "5", "--budget_s", "0.01")
    run.check()
    assert [(r["epoch"], r["step"]) for r in run.records("eval")] == [(1, 6)]  # 5 planned, 1 fitted
    assert "time budget 0 s: 30 -> 6 steps" in (run.out / "stdout.txt").read_text()
    state = torch.load(run.out / "checkpoints" / "step_00000006" / "trainer_state.pt", weights_only=True)
    assert state["n_epochs"] == 1 and state["callbacks"]["time_budget"]["budget_spent_s"] > 0


def test_a_planned_shorter_last_epoch_is_trained_to_the_step(tmp_path):
    # the plan: 2 epochs of 6 steps, the last one 2 steps long (budget 0: the plan is set, never re-fitted)
    args = ["--size_batch", "8", "--size_epoch", "2", "--budget_s", "0", "--last_epoch_steps", "2"]
    run = run_budgeted(tmp_path, *BASE_ARGS, *args).check()
    assert [(r["epoch"], r["step"]) for r in run.records("eval")] == [(1, 6), (2, 8)]
    train = run.records("train")
    assert train[-1]["step"] == 8
    assert train[-1]["lr"] == pytest.approx(1e-2 / 7)  # 1 warm-up step, then the decay ends at step 8


def test_a_time_budget_lengthens_a_run_and_its_lr_decay_follows(tmp_path):
    # 6 steps of 2 sleeping micro-steps each: >= 0.6 s an epoch; 3 s fit ~4 epochs (at most 5)
    args = ["--size_batch", "8", "--size_epoch", "1", "--budget_s", "3", "--toy_step_sleep", "0.05"]
    run = run_budgeted(tmp_path, *BASE_ARGS, *args).check()
    last = run.records("eval")[-1]
    epochs, total = last["epoch"], last["step"]
    assert epochs >= 2 and 6 * (epochs - 1) < total <= 6 * epochs  # to the step: the last epoch may be short
    train = run.records("train")
    assert train[-1]["step"] == total
    # warm-up of 1 step (warmup_ratio 0.1 of the first plan's 6), then linear towards 0 at the fitted end: the
    # last step's rate was set by the last re-fit that lengthened the run (to `fitted` steps, >= total; the
    # first plan's 6 would have left it at 0)
    fitted = [
        t
        for t in range(total, total + 7)
        if train[-1]["lr"] == pytest.approx(1e-2 * (t - total + 1) / (t - 1))
    ]
    assert fitted, train[-1]


def test_a_time_budget_waits_for_every_stream_before_refitting(tmp_path):
    # "cls" joins at epoch 2 of 4: the plan stands until an epoch has drawn both streams, then shrinks
    args = ["--size_batch", "8", "--size_epoch", "4", "--budget_s", "0.01", "--toy_starts", "0,0.5"]
    run = run_budgeted(tmp_path, *BASE_ARGS, *args).check()
    assert [r["epoch"] for r in run.records("eval")] == [1, 2, 3]
    assert "24 -> 18 steps" in (run.out / "stdout.txt").read_text()
    streams = {r["stream"] for r in run.records("train") if r["step"] <= 12}
    assert streams == {"reg"}  # no "cls" before epoch 2


def test_a_resumed_run_goes_on_spending_the_seconds_its_checkpoint_saved():
    """The seconds spent before an interruption (the checkpoint's callback state) count against the budget."""
    lengths = []
    trainer = SimpleNamespace(
        epoch=0, n_epochs=10, last_epoch_steps=10, total_steps=100, global_step=5, micro_in_epoch=0,
        set_length=lambda *length: lengths.append(length), epoch_steps=lambda epoch: 10,
        schedule=SimpleNamespace(start_epochs=[0, 0], steps_per_epoch=10), log=SimpleNamespace(info=print),
    )  # fmt: skip
    budget = TimeBudget(1000.0, epoch_s=1.0)
    budget.load_state_dict({"budget_spent_s": 990.0})
    budget.on_fit_start(trainer)
    budget.on_epoch_start(trainer)
    trainer.epoch = 1
    budget.on_epoch_end(trainer)  # ~1 s an epoch (its evaluation), steps take ~0 s: 1000 s would fit ~1000
    assert lengths == [(9, 10)]  # epochs, but 10 s are left: this epoch's evaluation, then 8 more epochs
    assert budget.state_dict()["budget_spent_s"] >= 990.0
