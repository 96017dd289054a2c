"""The checkpoint folder: what a training run writes and :mod:`lib.api` loads.

* ``model.safetensors``: the weights; ``args.json``: the run config (written by the engine);
* ``config.json``: the :class:`LavenderConfig` fields plus an ``"inference"`` section
  (:func:`inference_settings`): how a video file becomes stored frames (the extractor's frame count, JPEG
  settings), how stored frames become a clip, and per registered task name (``retrieval``, ``qaoe``,
  ``qamc``, ``captioning``, or any registered task with a predictor) a list of trained tasks with their
  settings (:meth:`lib.tasks.common.Task.inference_entry`: text length, layout, QA answer list, true/false
  scoring, decoding settings);
* the tokenizer files (``tokenizer.json``, ``vocab.txt``, ...);
* ``README.md``: the model card (:mod:`lib.tasks.model_card`).

Format version 1 keyed the tasks by kind (``match``, ``qa_open``, ``qa_choice``, ``caption``): those are
aliases of the registered names, and :func:`normalise_settings` reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from lib.data.annotations import write_json_atomic
from lib.data.extract import FRAME_RULE, OutputPaths
from lib.data.tsv import TSVFile, frame_columns
from lib.data.video import JPEG_QUALITY
from lib.engine.config import KEYS, Config
from lib.engine.logging import read_jsonl
from lib.model.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    CheckpointError,
    config_from_reference_args,
    load_checkpoint,
    save_model_dir,
)
from lib.model.config import INFERENCE_KEY, LavenderConfig
from lib.model.lavender import LavenderModel
from lib.tasks.common import Task, clip_settings, fbank_config, group_configs, img_tsv_path, load_tokenizer
from lib.tasks.model_card import write_model_card
from lib.tasks.registry import MULTI_TASK, canonical_name, get_task
from lib.utils.files import read_json

FORMAT_VERSION = 2
SERVING_TASKS = ("retrieval", "qaoe", "qamc", "captioning")
"""The built-in tasks with a predictor: every checkpoint lists them (empty when not trained)."""
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def args_config(args: Mapping[str, Any], source: str = "args") -> Config:
    """A run Config from a saved ``args.json`` or a reference args JSON (keys outside the schema dropped)."""
    return Config({k: v for k, v in args.items() if k in KEYS}, source=source)


def extraction_settings(table: Path | None, size_frame: int) -> dict[str, Any]:
    """How a raw video becomes stored frames, as the frame table of the training data was made.

    From the extractor's summary beside the table (``img_X.json`` of :func:`lib.data.extract.extract_videos`);
    for a table made elsewhere (the reference's), the frame count of its first row with the reference's
    rule and JPEG settings; without a table, ``size_frame`` frames (an assumption, said in ``source``).
    """
    rule = {"frame_rule": FRAME_RULE, "jpeg_quality": JPEG_QUALITY, "size_short": None}
    summary = OutputPaths.of(table).summary if table is not None else None
    if summary is not None and summary.is_file():
        made = json.loads(summary.read_text())
        if made.get("tool") == "lib.data.extract":
            return {
                **rule,
                "frames_per_video": int(made["k"]),
                "jpeg_quality": int(made["jpeg_quality"]),
                "size_short": made.get("size_short"),
                "source": f"extractor summary {summary.name}",
            }
    if table is not None and table.is_file():
        with TSVFile(table) as rows:
            if len(rows):
                k = len(frame_columns(rows.row(0)))
                return {**rule, "frames_per_video": k, "source": f"frames in the first row of {table.name}"}
    return {**rule, "frames_per_video": size_frame, "source": "assumed equal to size_frame (no frame table)"}


def inference_settings(cfg: Config, tasks: Sequence[Task] | None = None) -> dict[str, Any]:
    """The ``inference`` section of config.json for a run config (and its built tasks, when given)."""
    if tasks:
        pairs: list[tuple[Config, Task | None]] = [(t.cfg, t) for t in tasks]
    else:
        configs = cfg.task_configs() if cfg.type == MULTI_TASK else [cfg]
        pairs = [(group, None) for c in configs for group, _ in group_configs(c)]
    entries: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVING_TASKS}
    notes = []
    for task_cfg, task in pairs:
        task_cls = type(task) if task is not None else get_task(task_cfg.type)
        entry = task_cls.inference_entry(task_cfg, task)
        if entry is None:
            continue
        name = task_cls.serving_name()
        entries.setdefault(name, []).append(entry)
        if entry.get("answer_space") == "vocab":
            notes.append(
                f"{name} {entry['name']}: no answer list in the checkpoint; answers are the arg-max over "
                "the whole vocabulary (one wordpiece)"
            )
    table = next((t.frame_table() for t in tasks or [] if t.frame_table() is not None), None)
    if table is None and cfg.dataset:
        table = img_tsv_path(cfg, cfg.dataset[0] if isinstance(cfg.dataset, list) else cfg.dataset)
    audio = {}
    if "audio" in cfg.modalities:  # how a video file's sound becomes the audio encoder's input
        audio = {"audio": {"kind": "fbank", **dataclasses.asdict(fbank_config(cfg))}}
    return {
        "format_version": FORMAT_VERSION,
        "video": {**extraction_settings(table, cfg.size_frame), **clip_settings(cfg)},
        **audio,
        "tasks": entries,
        "trained_on": [{"type": c.type, "task": c.task, "dataset": c.dataset} for c, _ in pairs],
        "training": {
            k: cfg[k]
            for k in ("type", "size_epoch", "steps_per_epoch", "size_batch", "lr", "precision", "seed")
        },
        "notes": notes,
    }


def normalise_settings(settings: dict[str, Any], source: str) -> dict[str, Any]:
    """Inference settings keyed by registered task names (a version-1 file's kinds are aliases)."""
    version = int(settings.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: inference format {version} is newer than this code's ({FORMAT_VERSION}); update it"
        )
    tasks: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVING_TASKS}
    for key, entries in settings.get("tasks", {}).items():
        tasks.setdefault(canonical_name(key), []).extend(entries)
    return {**settings, "tasks": tasks}


def write_checkpoint(
    model: torch.nn.Module,
    folder: str | Path,
    tokenizer,
    settings: Mapping[str, Any],
    metrics: Mapping[str, float] | None = None,
    metrics_label: str = "",
) -> Path:
    """Fill ``folder`` with a complete checkpoint: model.safetensors, config.json (the model's config plus
    ``settings`` under "inference"), the tokenizer files and the README.md model card."""
    folder = Path(folder)
    save_model_dir(model, folder)
    config = {**model.config.to_dict(), INFERENCE_KEY: dict(settings)}
    write_json_atomic(folder / MODEL_CONFIG, config, indent=2)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(folder))
    write_model_card(folder, metrics, metrics_label)
    return folder


def latest_eval_metrics(path_output: str | Path) -> tuple[dict[str, float], str]:
    """The last evaluation logged in a run's log.jsonl (validation numbers) and a label for them."""
    log = Path(path_output) / "log.jsonl"
    records = read_jsonl(log, kind="eval") if log.is_file() else []
    if not records:
        return {}, ""
    last = records[-1]
    metrics = {
        k: v for k, v in last.items() if k not in ("kind", "epoch", "step") and isinstance(v, int | float)
    }
    return metrics, f"last evaluation during training (epoch {last.get('epoch')}, step {last.get('step')})"


def record_metrics(folder: str | Path, metrics: Mapping[str, float], label: str) -> Path:
    """Rewrite a checkpoint's model card with these metrics (e.g. the final test numbers of the run)."""
    return write_model_card(Path(folder), metrics, label)


def save_model_fn(tokenizer, cfg: Config, tasks: Sequence[Task]) -> Callable[[torch.nn.Module, Path], None]:
    """The engine's hook that writes a complete checkpoint folder (see :func:`write_checkpoint`), its card
    carrying the run's latest evaluation; the final test numbers come later with :func:`record_metrics`."""
    settings = inference_settings(cfg, tasks)

    def save(model: torch.nn.Module, folder: Path) -> None:
        metrics, label = latest_eval_metrics(cfg.path_output)
        write_checkpoint(model, folder, tokenizer, settings, metrics, label)

    return save


# ------------------------------------------------------------------------------------------ loading


def read_settings(path: Path, reference_args: dict | None) -> tuple[dict[str, Any], str]:
    """The inference settings of a checkpoint folder and where they came from."""
    if reference_args is not None:
        return inference_settings(args_config(reference_args, "reference_args")), "reference_args"
    config = read_json(path / MODEL_CONFIG, "checkpoint config (config.json)")
    if INFERENCE_KEY in config:
        source = f"{path / MODEL_CONFIG}"
        return normalise_settings(config[INFERENCE_KEY], source), source
    args = path / "args.json"
    if args.is_file():
        return inference_settings(args_config(read_json(args, "run config"), str(args))), str(args)
    return inference_settings(Config()), "defaults"


def load_weights(path: Path, reference_args: dict | None) -> LavenderModel:
    """The model of a checkpoint folder (strict: every key must fit) or of a reference ``.pt`` file."""
    if path.is_dir():
        config_path = path / MODEL_CONFIG
        if not config_path.is_file():
            raise FileNotFoundError(
                f"{path} is not a checkpoint folder: it has no {MODEL_CONFIG} (expected a folder written by "
                "save_pretrained or a training run's model/ folder)"
            )
        fields = read_json(config_path, "checkpoint config (config.json)")
        fields.pop(INFERENCE_KEY, None)
        model = LavenderModel(LavenderConfig.from_dict(fields, source=str(config_path)))
        report = load_checkpoint(model, path / MODEL_WEIGHTS, strict=True)
    else:
        if reference_args is None:
            raise ValueError(
                f"{path} is a checkpoint file: pass reference_args (its reference args JSON, which fixes the "
                "model size), or convert it once with _tools/convert_checkpoint.py"
            )
        model = LavenderModel(config_from_reference_args(reference_args))
        size_img, size_frame = reference_args.get("size_img"), reference_args.get("size_frame")
        report = load_checkpoint(
            model,
            path,
            strict=True,
            trained_grid=int(size_img) // 32 if size_img else None,
            trained_frames=int(size_frame) if size_frame else None,
        )
    if report.initialised and path.is_dir():
        raise CheckpointError(f"{path}: incomplete model weights:\n{report}")
    return model


def find_tokenizer(path: Path, tokenizer: Any, reference_args: dict | None):
    """The tokenizer: given (object or folder), the checkpoint folder's files, or the run's txt_backbone."""
    if tokenizer is not None:
        return load_tokenizer(str(tokenizer)) if isinstance(tokenizer, str | os.PathLike) else tokenizer
    if path.is_dir() and any((path / f).is_file() for f in TOKENIZER_FILES):
        from transformers import BertTokenizerFast

        return BertTokenizerFast.from_pretrained(str(path))
    backbone = (reference_args or {}).get("txt_backbone")
    args = path / "args.json"
    if backbone is None and path.is_dir() and args.is_file():
        backbone = read_json(args, "run config").get("txt_backbone")
    try:
        if backbone:
            return load_tokenizer(backbone)
    except (FileNotFoundError, OSError) as e:
        raise FileNotFoundError(f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); {e}") from None
    raise FileNotFoundError(
        f"{path}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); pass tokenizer= (a local BERT folder "
        "with vocab.txt) or copy the tokenizer files into the checkpoint folder"
    )
