"""How long the demo trains: as long as fits its wall-clock budget (``--budget_min``) on this machine.

Before training, :func:`measure_and_plan` times a few real optimizer steps of every task stream
(:mod:`lib.demo.timing`) and one validation pass, and plans the epochs that fit ``SAFETY`` of the time left
(:func:`plan_length`). Steps inside a run cost more than timed alone, by a ratio that changes from run to
run, so the run itself re-fits its number of epochs after each one to the pace it measures, within
``TIME_BUDGET_SHARE`` of the time left: :class:`TimeBudget`, a callback of the run's trainer. The plan's
budget is recorded beside the run (:func:`record_budget`), so that an interrupted run resumes with it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lib.data.annotations import write_json_atomic
from lib.engine import distributed as D
from lib.engine.callbacks import Callback

if TYPE_CHECKING:
    from lib.engine.trainer import Trainer

# Share of the remaining budget the first plan (from steps timed alone) fills. Steps inside a run cost more
# than timed alone (the DataLoader worker shares the 2 cores; clipping, logging; the CPU's speed drifts):
# in-run / timed was 1.08-1.43 on a 2-core AMD EPYC (Zen 4, bf16) and up to 1.26 on a 2-core Xeon. The run
# then re-fits its number of epochs after each one to the pace it measures (TimeBudget), within
# TIME_BUDGET_SHARE of the remaining budget (the rest: one epoch running slower than the ones before).
SAFETY = 0.80
TIME_BUDGET_SHARE = 0.92
REPORT_S = 30.0  # chance levels, curves, the examples picture (a few captions and answers), measured < 20 s
MIN_STEPS = 10  # the shortest epoch a budget too small for one configured epoch shrinks to
BUDGET_FILE = "time_budget.json"  # beside the run's args.json: the budget an interrupted run resumes with


def test_to_val_items(task: Any, args: argparse.Namespace) -> float:
    """How many times a task's validation items its test split holds (the test split's evaluation time as a
    multiple of the timed validation pass): e.g. 10 for multiple choice, with MC_TEST_ITEMS per test video
    and one per val video; the ratio of videos for a task without annotation splits."""
    from lib.tasks.common import AnnotatedTask

    if isinstance(task, AnnotatedTask) and {"val", "test"} <= set(task.eval_splits()):  # both non-empty
        return len(task.ann["test"]) / len(task.ann["val"])
    return max(1.0, args.n_test / max(1, args.n_val))


def plan_length(
    left_s: float, step_s: float, steps_per_epoch: int, eval_s: float, max_epochs: int, stretch: bool = True
) -> tuple[int, int]:
    """(epochs, steps per epoch) that use ``SAFETY`` of ``left_s``, each epoch ending with an evaluation of
    ``eval_s``: as many whole epochs of ``steps_per_epoch`` as fit (at least one, at most ``max_epochs``).
    With ``stretch``, below ``max_epochs`` each epoch is then lengthened to use the remainder too (a budget
    for 3.6 epochs trains 3 longer ones), and a budget for less than one epoch shortens it (to at least
    ``min(MIN_STEPS, steps_per_epoch)`` steps)."""
    usable = SAFETY * left_s
    epochs = int(min(max_epochs, max(1, usable // (steps_per_epoch * step_s + eval_s))))
    fits = usable >= epochs * (steps_per_epoch * step_s + eval_s)
    if not stretch or (epochs == max_epochs and fits):
        return epochs, steps_per_epoch
    steps = int((usable - epochs * eval_s) // (epochs * step_s))
    return epochs, max(min(MIN_STEPS, steps_per_epoch), steps)


def measure_and_plan(args: argparse.Namespace, argv: Sequence[str], started: float) -> dict[str, Any]:
    """The length that fits what is left of ``args.budget_min`` minutes since ``started`` (a
    ``time.perf_counter()``) for the multi-task run of ``argv``, from a few real steps of every stream and one
    validation pass of every task, measured here."""
    from lib.demo.timing import mean_step_seconds, time_train_steps
    from lib.engine.precision import autocast, resolve_precision
    from lib.tasks.run import evaluate_tasks, prepare

    cfg, _, model, tasks = prepare("multi-task", list(argv))
    streams = [s for t in tasks for s in t.train_streams()]
    step_s = mean_step_seconds(time_train_steps(model, streams, cfg), streams, cfg)
    model.eval()
    device = next(model.parameters()).device
    eval_s = test_s = 0.0  # one validation pass (after every epoch when eval_every is 1); the final test one
    with torch.no_grad(), autocast(device, resolve_precision(cfg.precision, device)):
        for task in tasks:
            measured = time.perf_counter()
            evaluate_tasks([task], model, ["val"])
            seconds = time.perf_counter() - measured
            eval_s += seconds
            test_s += seconds * test_to_val_items(task, args)
    left = args.budget_min * 60 - (time.perf_counter() - started) - test_s - REPORT_S
    epoch_eval_s = eval_s if cfg.eval_every == 1 else 0.0
    epochs, steps_per_epoch = plan_length(
        left, step_s, cfg.steps_per_epoch, epoch_eval_s, cfg.size_epoch, stretch=args.steps_per_epoch is None
    )
    capped = epochs == cfg.size_epoch and steps_per_epoch == cfg.steps_per_epoch  # the config's length fits
    plan = {
        "size_epoch": epochs,
        "steps_per_epoch": steps_per_epoch,
        "time_budget_s": 0.0 if capped else max(1.0, TIME_BUDGET_SHARE * left),  # spent: stop when it can
        "source": f"{args.budget_min:g}-minute budget",
        "max_epochs": cfg.size_epoch,
        "steps": epochs * steps_per_epoch,
        "step_s": step_s,
        "eval_s": eval_s,
    }
    print(
        f"      {1000 * step_s:.0f} ms per step, {eval_s:.0f} s per validation pass → {epochs} epochs × "
        f"{steps_per_epoch} steps = {plan['steps']} steps (at most {cfg.size_epoch} × {cfg.steps_per_epoch})",
        flush=True,
    )
    return plan


def record_budget(run_dir: Path, seconds: float) -> None:
    """Record the budget of the run in ``run_dir`` (for :func:`recorded_budget` after an interruption)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / BUDGET_FILE, {"time_budget_s": seconds})


def recorded_budget(run_dir: Path) -> float:
    """The budget :func:`record_budget` wrote for the run in ``run_dir`` (0.0: none)."""
    path = run_dir / BUDGET_FILE
    return float(json.loads(path.read_text())["time_budget_s"]) if path.is_file() else 0.0


class TimeBudget(Callback):
    """After every epoch, re-fit the run's length to the epochs that ``seconds`` of training and evaluation
    still allow at the pace measured in this run (an epoch's training plus, when it evaluates, its
    evaluation), never fewer than those done; the learning-rate decay follows the new length
    (``Trainer.set_length``). The pace is measured from the first epoch that draws every stream (a stream
    with a later ``task_start`` changes the cost of an epoch); before it, the planned length stands. Times
    are the slowest rank's. The seconds spent are saved in the run's checkpoints, so a resumed run goes on
    spending the same budget."""

    state_key = "time_budget"

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent_before_s = 0.0  # training + evaluation seconds of earlier processes of this run
        self._started: float | None = None
        self._pace_mark: tuple[int, float] | None = None  # (epoch, time) from which every stream is drawn

    def on_fit_start(self, trainer: Trainer) -> None:
        self._started = time.perf_counter()

    def on_epoch_start(self, trainer: Trainer) -> None:
        if (
            self._pace_mark is None
            and trainer.micro_in_epoch == 0
            and max(trainer.schedule.start_epochs) <= trainer.epoch
        ):
            self._pace_mark = (trainer.epoch, time.perf_counter())

    def on_epoch_end(self, trainer: Trainer) -> None:
        if self.seconds <= 0 or self._pace_mark is None or self._started is None:
            return
        now = time.perf_counter()
        spent, paced = (
            float(x)
            for x in D.all_reduce_tensor(torch.tensor([now - self._started, now - self._pace_mark[1]]), "max")
        )
        eval_now = trainer.last_eval_s if trainer.cfg.eval_every > 0 else 0.0  # this epoch's, about to run
        pace = (paced + eval_now) / (trainer.epoch - self._pace_mark[0])
        left = self.seconds - self.spent_before_s - spent - eval_now
        n_epochs = trainer.epoch + max(0, int(left // pace))
        if n_epochs != trainer.n_epochs:
            trainer.log.info(
                f"time budget {self.seconds:.0f} s: {trainer.n_epochs} -> {n_epochs} epochs "
                f"({pace:.1f} s per epoch here, {self.spent_before_s + spent:.0f} s spent)"
            )
            trainer.set_length(n_epochs)

    def state_dict(self) -> dict[str, Any]:
        this_process = 0.0 if self._started is None else time.perf_counter() - self._started
        return {"budget_spent_s": self.spent_before_s + this_process}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent_before_s = state["budget_spent_s"]
