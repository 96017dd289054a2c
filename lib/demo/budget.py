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
# then re-fits its length, to the step, after each epoch to the pace it measures (TimeBudget), within
# TIME_BUDGET_SHARE of the remaining budget (the rest: the last epoch running slower than the ones before).
# At 0.92, `make demo` in a fresh clone on a 2-core Xeon (Sapphire Rapids) ended at 13.5 of its 15 minutes.
SAFETY = 0.80
TIME_BUDGET_SHARE = 0.96
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


def fit_steps(usable_s: float, step_s: float, steps_per_epoch: int, epoch_s: float, max_epochs: int) -> int:
    """The most optimizer steps (at most ``max_epochs`` epochs of ``steps_per_epoch``, the last one possibly
    shorter) whose training at ``step_s`` each, plus ``epoch_s`` after every epoch (its evaluation and
    checkpoint), fits ``usable_s``; 0 when not one step fits."""
    best = 0
    for epochs in range(1, max_epochs + 1):
        steps = min(epochs * steps_per_epoch, int((usable_s - epochs * epoch_s) // step_s))
        if steps <= (epochs - 1) * steps_per_epoch:  # this many epochs do not fit; more fit fewer steps
            break
        best = steps
    return best


def split_steps(steps: int, steps_per_epoch: int) -> tuple[int, int]:
    """(epochs, steps of the last epoch) of a run of ``steps`` optimizer steps in epochs of
    ``steps_per_epoch`` (every epoch but the last whole)."""
    epochs = max(1, -(-steps // steps_per_epoch))
    return epochs, max(1, steps - (epochs - 1) * steps_per_epoch)


def plan_length(
    left_s: float, step_s: float, steps_per_epoch: int, eval_s: float, max_epochs: int, stretch: bool = True
) -> tuple[int, int, int]:
    """(epochs, steps per epoch, steps of the last epoch) that use ``SAFETY`` of ``left_s``, each epoch ending
    with an evaluation of ``eval_s``: planned in steps, so the last epoch may be shorter than the others (at
    most ``max_epochs`` epochs of ``steps_per_epoch``). Without ``stretch`` (a fixed ``steps_per_epoch``)
    only whole epochs. At least one epoch of ``min(MIN_STEPS, steps_per_epoch)`` steps: when less than one
    epoch fits, that epoch is shortened."""
    usable = SAFETY * left_s
    steps = fit_steps(usable, step_s, steps_per_epoch, eval_s, max_epochs)
    if steps < steps_per_epoch:  # less than one epoch: one shorter epoch, never below MIN_STEPS
        short = max(min(MIN_STEPS, steps_per_epoch), steps)
        return 1, short, short
    if not stretch:
        return steps // steps_per_epoch, steps_per_epoch, steps_per_epoch
    epochs, last = split_steps(steps, steps_per_epoch)
    return epochs, steps_per_epoch, last


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
    epochs, steps_per_epoch, last = plan_length(
        left, step_s, cfg.steps_per_epoch, epoch_eval_s, cfg.size_epoch, stretch=args.steps_per_epoch is None
    )
    capped = (epochs, steps_per_epoch, last) == (cfg.size_epoch,) + (cfg.steps_per_epoch,) * 2  # all fits
    plan = {
        "size_epoch": epochs,
        "steps_per_epoch": steps_per_epoch,
        "last_epoch_steps": last,
        "time_budget_s": 0.0 if capped else max(1.0, TIME_BUDGET_SHARE * left),  # spent: stop when it can
        "source": f"{args.budget_min:g}-minute budget",
        "max_epochs": cfg.size_epoch,
        "steps": (epochs - 1) * steps_per_epoch + last,
        "step_s": step_s,
        "eval_s": eval_s,
    }
    shape = f"{epochs} epochs × {steps_per_epoch} steps" + (
        f" (the last {last})" if last < steps_per_epoch else ""
    )
    print(
        f"      {1000 * step_s:.0f} ms per step, {eval_s:.0f} s per validation pass → {shape} = "
        f"{plan['steps']} steps (at most {cfg.size_epoch} × {cfg.steps_per_epoch})",
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
    """Fit the run's length, to the step, into ``seconds`` of training and evaluation.

    At the start of a fresh run it sets the planned length (``last_epoch_steps``: the plan's last epoch may be
    shorter than the others). After every epoch it re-fits the rest at the pace measured in this run: seconds
    per optimizer step (from the first epoch that draws every stream: a stream with a later ``task_start``
    changes the cost of a step; before it, the planned length stands) and seconds between an epoch's last step
    and the next one's first (its evaluation and checkpoint; ``epoch_s`` until measured), never shorter than
    what is done. The learning-rate decay follows the new length (``Trainer.set_length``). Times are the
    slowest rank's. The seconds spent are saved in the run's checkpoints, so a resumed run goes on spending
    the same budget."""

    state_key = "time_budget"

    def __init__(self, seconds: float, last_epoch_steps: int | None = None, epoch_s: float = 0.0):
        self.seconds = seconds
        self.last_epoch_steps = last_epoch_steps
        self.epoch_s = epoch_s  # an epoch's evaluation + checkpoint, until this run measures it
        self.spent_before_s = 0.0  # training + evaluation seconds of earlier processes of this run
        self._started: float | None = None
        self._epoch_started: float | None = None
        self._epoch_ended: float | None = None
        self._paced = [0.0, 0]  # training seconds and steps of the epochs that drew every stream

    def on_fit_start(self, trainer: Trainer) -> None:
        self._started = time.perf_counter()
        fresh = trainer.global_step == 0 and trainer.micro_in_epoch == 0
        if fresh and self.last_epoch_steps is not None and trainer.n_epochs > 0:
            trainer.set_length(trainer.n_epochs, self.last_epoch_steps)

    def on_epoch_start(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        if self._epoch_ended is not None:  # the evaluation and checkpoint of the epoch before
            self.epoch_s = now - self._epoch_ended
        full_epoch = trainer.micro_in_epoch == 0 and max(trainer.schedule.start_epochs) <= trainer.epoch
        self._epoch_started = now if full_epoch else None

    def on_epoch_end(self, trainer: Trainer) -> None:
        now = time.perf_counter()
        self._epoch_ended = now
        if self._epoch_started is not None:
            self._paced[0] += now - self._epoch_started
            self._paced[1] += trainer.epoch_steps(trainer.epoch - 1)
        if self.seconds <= 0 or self._started is None or self._paced[1] == 0:
            return
        spent, train_s, epoch_s = (
            float(x)
            for x in D.all_reduce_tensor(
                torch.tensor([now - self._started, self._paced[0], self.epoch_s]), "max"
            )
        )
        step_s = max(train_s / self._paced[1], 1e-6)
        left = (
            self.seconds - self.spent_before_s - spent - epoch_s
        )  # this epoch's evaluation is still to come
        spe = trainer.schedule.steps_per_epoch
        steps = fit_steps(left, step_s, spe, epoch_s, 10**6)
        if steps > 0:
            more, last = split_steps(steps, spe)
            n_epochs = trainer.epoch + more
        else:  # stop now: the epoch that just ended is the last (whole, unless it was the planned last)
            n_epochs = trainer.epoch
            last = trainer.last_epoch_steps if trainer.n_epochs == trainer.epoch else spe
        if (n_epochs, last) != (trainer.n_epochs, trainer.last_epoch_steps):
            trainer.log.info(
                f"time budget {self.seconds:.0f} s: {trainer.total_steps} -> "
                f"{trainer.global_step + max(0, steps)} steps ({1000 * step_s:.0f} ms per step and "
                f"{epoch_s:.1f} s per evaluation here, {self.spent_before_s + spent:.0f} s spent)"
            )
            trainer.set_length(n_epochs, last)

    def state_dict(self) -> dict[str, Any]:
        this_process = 0.0 if self._started is None else time.perf_counter() - self._started
        return {"budget_spent_s": self.spent_before_s + this_process}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.spent_before_s = state["budget_spent_s"]
