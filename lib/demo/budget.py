"""How long the demo trains: as long as fits its wall-clock budget (``--budget_min``) on this machine.

Before training, :func:`measure_and_plan` times a few real optimizer steps of every task stream
(:mod:`lib.demo.timing`) and one validation pass, and plans the epochs that fit ``SAFETY`` of the time left
(:func:`plan_length`). Steps inside a run cost more than timed alone, by a ratio that changes from run to
run, so the run itself re-fits its number of epochs after each one to the pace it measures
(``time_budget_s``), within ``TIME_BUDGET_SHARE`` of the time left.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

# Share of the remaining budget the first plan (from steps timed alone) fills. Steps inside a run cost more
# than timed alone (the DataLoader worker shares the 2 cores; clipping, logging; the CPU's speed drifts):
# in-run / timed was 1.08-1.43 on a 2-core AMD EPYC (Zen 4, bf16) and up to 1.26 on a 2-core Xeon. The run
# then re-fits its number of epochs after each one to the pace it measures (``time_budget_s``), within
# TIME_BUDGET_SHARE of the remaining budget (the rest: one epoch running slower than the ones before).
SAFETY = 0.80
TIME_BUDGET_SHARE = 0.92
REPORT_S = 30.0  # chance levels, curves, the examples picture (a few captions and answers), measured < 20 s
MIN_STEPS = 10  # the shortest epoch a budget too small for one configured epoch shrinks to


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
    import torch

    from lib.demo.timing import mean_step_seconds, time_train_steps
    from lib.engine.trainer import autocast, resolve_precision
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
