"""Run a registered task from the command line: config → tokenizer → model → task(s) → the engine.

Every ``main_*.py`` is ``run("<task name>")`` (:mod:`lib.tasks.registry`). Multi-task
(``type: multi-task``) builds one task per entry of ``datasets`` (each entry's keys override the global
ones) and trains them as streams of one run with one model and one head. After training, every task is
evaluated on its test split (or val when there is no test split) and ``metrics.json`` is written next to
the run's log.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from lib.data.annotations import write_json_atomic
from lib.engine import distributed as D
from lib.engine.callbacks import Callback
from lib.engine.checkpointing import seed_everything
from lib.engine.config import Config, ConfigError, load_config
from lib.engine.precision import autocast
from lib.engine.trainer import Trainer
from lib.tasks.build import build_model
from lib.tasks.checkpoint_folder import record_metrics, save_model_fn
from lib.tasks.common import Task, group_configs, load_tokenizer, resize_on_device
from lib.tasks.registry import MULTI_TASK, UnknownTaskError, get_task


def task_class(name: str) -> type[Task]:
    """The registered Task class of a config ``type`` (a config error when none is registered)."""
    try:
        return get_task(name)
    except UnknownTaskError as e:
        raise ConfigError(f"{e} (or {MULTI_TASK!r})") from None


def build_tasks(cfg: Config, tokenizer) -> list[Task]:
    """One task for a single-task config; one per ``datasets`` entry for multi-task."""
    if cfg.type != MULTI_TASK:
        return [
            task_class(cfg.type)(sub, tokenizer, name=(cfg.task or cfg.type) + suffix if suffix else None)
            for sub, suffix in group_configs(cfg)
        ]
    if not cfg.datasets:
        raise ConfigError("type multi-task needs a non-empty 'datasets' list of per-task configs")
    tasks = []
    for entry in cfg.datasets:
        sub = cfg.override(entry)
        if sub.type == MULTI_TASK:
            raise ConfigError(f"a multi-task entry must name its own type (entry {entry})")
        if "resize_on" in entry:
            raise ConfigError(
                f"resize_on applies to the whole run (one model resizes every batch); set it at "
                f"the top level, not in the entry of task {sub.task!r}"
            )
        if resize_on_device(cfg) and sub.size_img != cfg.size_img:
            raise ConfigError(
                f"task {sub.task!r} sets size_img {sub.size_img}, but the model resizes train crops to the "
                f"run's {cfg.size_img} (resize_on {cfg.resize_on!r}); use one size_img, or resize_on worker"
            )
        for group, suffix in group_configs(sub):
            tasks.append(task_class(sub.type)(group, tokenizer, name=f"{sub.type}_{sub.task}{suffix}"))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"multi-task entries must have distinct (type, task): {names}")
    return tasks


def evaluate_tasks(tasks: Sequence[Task], model, splits: Sequence[str] | None = None) -> dict[str, float]:
    """Every task on its evaluation splits; keys ``{task}/{split}/{metric}``."""
    metrics: dict[str, float] = {}
    for task in tasks:
        for split in splits or task.eval_splits():
            if split in task.eval_splits():
                for k, v in task.evaluate(model, split).items():
                    metrics[f"{task.name}/{split}/{k}"] = float(v)
    return metrics


def final_evaluation(trainer: Trainer, tasks: Sequence[Task]) -> dict[str, float]:
    """Each task on its test split (val where it has none), in eval mode with the run's precision."""
    model = trainer.model
    model.eval()
    metrics: dict[str, float] = {}
    with torch.no_grad(), autocast(trainer.device, trainer.dtype):
        for task in tasks:
            splits = task.eval_splits()
            if splits:
                metrics.update(evaluate_tasks([task], model, ["test" if "test" in splits else splits[-1]]))
    trainer.log.log({"kind": "final", "step": trainer.global_step, **metrics})
    return metrics


def prepare(
    task: str, argv: Sequence[str] | None = None
) -> tuple[Config, object, torch.nn.Module, list[Task]]:
    """The run's config, tokenizer, model (seeded: every rank and every call builds the same) and tasks."""
    cfg = load_config(list(sys.argv[1:] if argv is None else argv))
    if not cfg.type:
        cfg = cfg.override({"type": task})
    if cfg.type != task:
        raise ConfigError(f"this entry point runs type {task!r}, but the config says type {cfg.type!r}")
    if "audio" in cfg.modalities and not cfg.find_unused_parameters:
        # a batch without any audio, or a group without video, leaves an encoder without gradients (DDP)
        cfg = cfg.override({"find_unused_parameters": True})
    tokenizer = load_tokenizer(cfg.txt_backbone)
    seed_everything(cfg.seed)  # every rank builds identical random parts
    model = build_model(cfg, tokenizer)
    return cfg, tokenizer, model, build_tasks(cfg, tokenizer)


def run(task: str, argv: Sequence[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, float]:
    """Train and/or evaluate the registered ``task`` as the config says, with the trainer's ``callbacks``;
    returns the final test metrics."""
    cfg, tokenizer, model, tasks = prepare(task, argv)
    streams = [s for t in tasks for s in t.train_streams()]
    eval_splits = ["val"] if any("val" in t.eval_splits() for t in tasks) else None
    trainer = Trainer(
        cfg,
        model,
        streams,
        evaluate_fn=lambda m, epoch: evaluate_tasks(tasks, m, eval_splits),
        save_model_fn=save_model_fn(tokenizer, cfg, tasks),
        callbacks=callbacks,
    )
    trainer.fit()
    final = final_evaluation(trainer, tasks)
    if D.is_main():
        out = Path(cfg.path_output) / "metrics.json"
        write_json_atomic(out, final, indent=2)
        if (Path(cfg.path_output) / "model").is_dir():
            record_metrics(Path(cfg.path_output) / "model", final, "test split (final evaluation)")
        print(json.dumps(final, indent=2))
    return final
