"""From a run config to a model (backbones from local folders, or a checkpoint), and back to a model folder.

Initialisation follows LAVENDER: the Video Swin from Kinetics (``vis_backbone_init: 3d``) or ImageNet
(``2d``) weights under ``_models/video_swin_transformer/``, or random; the text embeddings, fusion encoder
and MLM head from a local Hugging Face BERT folder (``fusion_encoder``; ``fusion_encoder_rand_init`` keeps
only its shape). ``path_ckpt`` (a reference ``.pt`` or one of our model folders) then overrides everything
it holds; a path that does not exist is an error, never a silent fresh start.

Every saved model folder is a complete checkpoint for :mod:`lib.api` (``Lavender.from_pretrained``):

* ``model.safetensors``: the weights; ``args.json``: the run config (written by the engine);
* ``config.json``: the :class:`LavenderConfig` fields plus an ``"inference"`` section
  (:func:`inference_settings`): how a video file becomes stored frames (the extractor's frame count, JPEG
  settings), how stored frames become a clip, and per task kind (``match``, ``qa_open``, ``qa_choice``,
  ``caption``) a list of trained tasks with their text length, layout, QA answer list, true/false
  scoring and decoding settings;
* the tokenizer files (``tokenizer.json``, ``vocab.txt``, ...);
* ``README.md``: the model card (tasks, inputs, evaluation protocol, the latest numbers).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from lib.data.annotations import write_json_atomic
from lib.data.extract import FRAME_RULE, OutputPaths
from lib.data.tsv import TSVFile, frame_columns
from lib.data.video import JPEG_QUALITY
from lib.engine.checkpointing import require_existing
from lib.engine.config import KEYS, Config, ConfigError
from lib.engine.logging import read_jsonl
from lib.model.checkpoint import (
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    bert_config_fields,
    build_from_pretrained_parts,
    load_checkpoint,
    read_bert_config,
    save_model_dir,
)
from lib.model.lavender import BertSelfAttention, LavenderConfig, LavenderModel
from lib.tasks.common import Task, clip_transform, img_tsv_path, resize_on_device, resolve_pretrained_dir
from lib.tasks.qa_open import max_answer_pieces

logger = logging.getLogger(__name__)

SWIN_DIR = Path("_models/video_swin_transformer")


def model_config(cfg: Config) -> LavenderConfig:
    """Model geometry of a run config: Swin size or custom dims; fusion sizes from the BERT folder."""
    fields: dict = {
        "swin_size": cfg.vis_backbone_size,
        "max_size_frame": max(cfg.max_size_frame, cfg.size_frame),
        "max_size_patch": cfg.max_size_patch,
        "txt_backbone_embed_only": cfg.txt_backbone_embed_only,
        "enable_task_token": cfg.enable_task_token,
        "use_checkpoint": cfg.use_checkpoint,
        "swin_drop_path": cfg.vis_drop_path,
        "swin_stem_convs": cfg.vis_stem_convs,
        "video_attends_text": cfg.video_attends_text,
        "frame_size": cfg.size_img if resize_on_device(cfg) else None,
    }
    if cfg.txt_layers is not None:
        if cfg.txt_backbone_embed_only:
            raise ConfigError(
                f"txt_layers={cfg.txt_layers} needs txt_backbone_embed_only false (text layers are not built "
                "when the text backbone is embeddings only)"
            )
        if cfg.txt_layers < 1:
            raise ConfigError(f"txt_layers must be at least 1 (or null for all), got {cfg.txt_layers}")
        fields["num_text_layers"] = cfg.txt_layers
    for ours, key in (
        ("swin_embed_dim", "vis_embed_dim"),
        ("swin_depths", "vis_depths"),
        ("swin_heads", "vis_heads"),
        ("swin_window", "vis_window"),
        ("swin_patch_size", "vis_patch_size"),
    ):
        if cfg[key] is not None:
            fields[ours] = tuple(cfg[key]) if isinstance(cfg[key], list) else cfg[key]
    fields.update(bert_config_fields(read_bert_config(resolve_pretrained_dir(cfg.fusion_encoder))))
    for ours, key in (
        ("hidden_size", "fusion_hidden_size"),
        ("num_heads", "fusion_heads"),
        ("intermediate_size", "fusion_intermediate_size"),
    ):
        if cfg[key] is not None:
            fields[ours] = cfg[key]
    return LavenderConfig(**fields)


def swin_checkpoint(cfg: Config) -> tuple[Path | None, str]:
    """The local Video Swin weights ``vis_backbone_init`` asks for (None for random)."""
    init = cfg.vis_backbone_init
    if init == "random" or cfg.path_ckpt:
        return None, "random"
    size = cfg.vis_backbone_size
    if init == "3d":
        name = f"swin_{size}_patch244_window877_kinetics{cfg.kinetics}_22k.pth"
    else:
        name = f"swin_{size}_patch4_window7_224_22k.pth"
    path = SWIN_DIR / name
    if not path.is_file():
        raise FileNotFoundError(
            f"vis_backbone_init={init!r} needs the Video Swin weights {path} (the official release file); "
            f"put it there, or set --vis_backbone_init random"
        )
    return path, init


def build_model(cfg: Config, tokenizer=None) -> LavenderModel:
    """The run's model: backbones per the config, then ``path_ckpt`` if given."""
    config = model_config(cfg)
    swin_path, swin_init = swin_checkpoint(cfg)
    bert_dir = None if cfg.fusion_encoder_rand_init else resolve_pretrained_dir(cfg.fusion_encoder)
    model = build_from_pretrained_parts(config, bert_dir=bert_dir, swin_ckpt=swin_path, swin_init=swin_init)
    if cfg.fusion_layers is not None and cfg.fusion_layers != model.config.num_layers:
        model = keep_fusion_layers(model, cfg.fusion_layers)
    if cfg.fusion_dropout is not None:
        set_fusion_dropout(model, cfg.fusion_dropout)
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {model.config.vocab_size}"
        )
    for name, report in getattr(model, "load_reports", {}).items():
        logger.info("%s weights: %s", name, report)
    if cfg.path_ckpt:
        path = Path(require_existing(cfg.path_ckpt, "path_ckpt"))
        weights = path / MODEL_WEIGHTS if path.is_dir() else path
        report = load_checkpoint(model, weights, strict=False)
        logger.info("loaded %s: %s", weights, report)
    freeze_params(model, cfg.freeze_params)
    return model


def freeze_params(model: LavenderModel, prefixes: list[str]) -> list[str]:
    """Leave the parameters whose names start with one of ``prefixes`` untrained; return their names.

    E.g. the two vocabulary-sized matrices (``enc_txt.emb_txt.word_embeddings``,
    ``fc_mtm.predictions.decoder.weight``): on CPU their AdamW update and dense gradients cost more than the
    rest of a small model's step.
    """
    names = [name for name, _ in model.named_parameters()]
    frozen: list[str] = []
    for prefix in prefixes:
        hits = [n for n in names if n == prefix or n.startswith(prefix.rstrip(".") + ".")]
        if not hits:
            close = sorted({n.rsplit(".", 1)[0] for n in names if n.startswith(prefix.split(".")[0])})[:8]
            raise ConfigError(
                f"freeze_params: {prefix!r} matches no parameter of the model (parameter names follow the "
                f"checkpoint, e.g. {close or names[:8]})"
            )
        frozen += hits
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    if frozen:
        logger.info("frozen (freeze_params): %d tensors, %d parameters", len(frozen),
                    sum(params[n].numel() for n in frozen))  # fmt: skip
    return frozen


def set_fusion_dropout(model: LavenderModel, p: float) -> None:
    """Hidden and attention dropout ``p`` in the text embeddings and BERT layers (the folder's config sets
    them when the model is built)."""
    if not 0.0 <= p < 1.0:
        raise ConfigError(f"fusion_dropout must be in [0, 1), got {p}")
    model.config = dataclasses.replace(model.config, hidden_dropout=p, attention_dropout=p)
    for module in (*model.enc_txt.modules(), *model.trsfr.modules()):
        if isinstance(module, torch.nn.Dropout):
            module.p = p
        elif isinstance(module, BertSelfAttention):
            module.dropout = p


def keep_fusion_layers(model: LavenderModel, n: int) -> LavenderModel:
    """Keep the first ``n`` fusion layers (e.g. 2 of MiniLM's 6 for fast tests)."""
    if not 0 < n <= len(model.trsfr.layer):
        raise ValueError(f"fusion_layers={n}: the fusion encoder has {len(model.trsfr.layer)} layers")
    model.trsfr.layer = model.trsfr.layer[:n]
    model.config = dataclasses.replace(model.config, num_layers=n)
    return model


# ----------------------------------------------------------------------------------------------------
# The checkpoint directory: weights, config.json (model + "inference" section), tokenizer, README.md
# ----------------------------------------------------------------------------------------------------

FORMAT_VERSION = 1
INFERENCE_KEY = "inference"
"""The section of config.json that is not architecture: what ``lib.api.Lavender`` needs to run each task."""
MODEL_CARD = "README.md"
TASK_KINDS = ("match", "qa_open", "qa_choice", "caption")
KIND_OF_FAMILY = {
    "retrieval": "match",
    "pretrain": "match",
    "qaoe": "qa_open",
    "qamc": "qa_choice",
    "captioning": "caption",
}
PROTOCOLS = {
    "match": (
        "text-to-video retrieval: every caption of the split ranked against every video of the split by the "
        "fusion encoder (a full cross-encoder ranking); the score is the true/false score at the [MASK] "
        "after the text ({tf_score}); R@1/5/10, median and mean rank, text-to-video and video-to-text"
    ),
    "qa_open": (
        "open-ended QA accuracy (%) of the top answer over the full official test size (size_test "
        "{size_test}; questions missing from the file count as wrong); {space}"
    ),
    "qa_choice": "multiple-choice accuracy (%) over the official test size ({style} style: {how})",
    "caption": (
        "one caption per video ({decoding}, at most {max_gen_length} words), BLEU-1..4, METEOR, ROUGE-L and "
        "CIDEr against every reference caption of the video (pycocoevalcap, or its Java-free fallback)"
    ),
}
TF_SCORES = {
    "prob": "2-way softmax over the 'true'/'false' logits",
    "ratio": "the reference's raw-logit ratio l_true / (l_true + l_false)",
}


def args_config(args: Mapping[str, Any], source: str = "args") -> Config:
    """A run Config from a saved ``args.json`` or a reference args JSON (keys outside the schema dropped)."""
    return Config({k: v for k, v in args.items() if k in KEYS}, source=source)


def clip_settings(cfg: Config) -> dict[str, Any]:
    """How stored frames become the model's clip at evaluation: frames sampled, side, transform (a random
    crop of training is the center crop at evaluation, and is recorded as such)."""
    transform = clip_transform(cfg, train=False)
    mode = transform.mode.replace("rand_crop", "center_crop")
    return {"size_frame": cfg.size_frame, "size_img": transform.size_img, "transform": mode}


def frame_table(task: Task) -> Path | None:
    """The frame TSV a task reads (its store, or its first pretraining source's)."""
    store = getattr(task, "store", None)
    if store is None and getattr(task, "sources", None):
        store = task.sources[0].store  # type: ignore[attr-defined]
    return Path(store.paths[0]) if store is not None else None


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


def task_entry(cfg: Config, task: Task | None = None) -> tuple[str, dict[str, Any]] | None:
    """(kind, settings) of one trained task, or None for a task the API has no use for (MLM-only).

    With the Task object, what it derived from its data is used (the QA answer list, the detected layout
    and multiple-choice style); from a config alone those stay "auto" / empty.
    """
    kind = KIND_OF_FAMILY.get(cfg.type)
    if kind is None or (cfg.type == "pretrain" and "vtm" not in cfg.pretrain_tasks):
        return None
    entry: dict[str, Any] = {
        "name": cfg.task or cfg.type,
        "size_txt": cfg.size_txt,
        "video": clip_settings(cfg),
    }
    if kind == "match":
        entry.update(tf_score=cfg.tf_score, pair_batch=cfg.eval_pair_batch)
    elif kind == "qa_open":
        answers = list(getattr(task, "candidates", None) or [])
        layout = ("fill_blank" if task.fill_blank else "open") if task is not None else cfg.qa_layout  # type: ignore[attr-defined]
        entry.update(
            layout=layout,
            answer_space="candidates" if answers else "vocab",
            max_answer_pieces=max_answer_pieces(cfg.size_txt),
            size_test=cfg.size_test,
            answers=answers,
        )
    elif kind == "qa_choice":
        style = getattr(task, "style", cfg.mc_style)
        entry.update(style=style, n_options=cfg.size_option, tf_score=cfg.tf_score, size_test=cfg.size_test)
        entry.update(shifts=cfg.mc_shifts)  # one-sequence style only
    else:
        entry.update(max_gen_length=cfg.max_gen_length, beam_size=cfg.beam_size, length_penalty=1.0)
    return kind, entry


def inference_settings(cfg: Config, tasks: Sequence[Task] | None = None) -> dict[str, Any]:
    """The ``inference`` section of config.json for a run config (and its built tasks, when given)."""
    if tasks:
        pairs: list[tuple[Config, Task | None]] = [(t.cfg, t) for t in tasks]
    else:
        configs = cfg.task_configs() if cfg.type == "multi-task" else [cfg]
        pairs = [(c, None) for c in configs]
    kinds: dict[str, list[dict[str, Any]]] = {k: [] for k in TASK_KINDS}
    notes = []
    for task_cfg, task in pairs:
        found = task_entry(task_cfg, task)
        if found is None:
            continue
        kind, entry = found
        kinds[kind].append(entry)
        if kind == "qa_open" and entry["answer_space"] == "vocab":
            notes.append(
                f"qa_open {entry['name']}: no answer list in the checkpoint; answers are the arg-max over "
                "the whole vocabulary (one wordpiece)"
            )
    table = next((t for t in map(frame_table, tasks or []) if t is not None), None)
    if table is None and cfg.dataset:
        table = img_tsv_path(cfg, cfg.dataset[0] if isinstance(cfg.dataset, list) else cfg.dataset)
    return {
        "format_version": FORMAT_VERSION,
        "video": {**extraction_settings(table, cfg.size_frame), **clip_settings(cfg)},
        "tasks": kinds,
        "trained_on": [{"family": c.type, "task": c.task, "dataset": c.dataset} for c, _ in pairs],
        "training": {
            k: cfg[k]
            for k in ("type", "size_epoch", "steps_per_epoch", "size_batch", "lr", "precision", "seed")
        },
        "notes": notes,
    }


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


def write_model_card(folder: Path, metrics: Mapping[str, float] | None = None, label: str = "") -> Path:
    config = json.loads((folder / MODEL_CONFIG).read_text())
    name = folder.name.removesuffix(".tmp")  # folders are written under NAME.tmp, then renamed
    text = model_card(config, metrics or {}, label, n_parameters(folder / MODEL_WEIGHTS), name)
    path = folder / MODEL_CARD
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def n_parameters(weights: Path) -> int:
    """Number of stored values in a safetensors file (read from its header; no tensor is loaded)."""
    with safe_open(str(weights), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def model_card(
    config: Mapping[str, Any], metrics: Mapping[str, float], label: str, n_params: int, name: str = "DIR"
) -> str:
    """README.md of a checkpoint: tasks, inputs, evaluation protocol, numbers, architecture, use."""
    inference = config.get(INFERENCE_KEY, {})
    video, tasks = inference.get("video", {}), inference.get("tasks", {})
    kinds = [k for k in TASK_KINDS if tasks.get(k)]
    lines = [
        "# LAVENDER checkpoint",
        "",
        "One video-language model (Video Swin + BERT fusion encoder + ONE masked-language-model head) that "
        "serves every task as masked-token prediction. "
        f"Trained for: {', '.join(kinds) or 'no task (MLM only)'}.",
        "",
        "## Use",
        "",
        "```python",
        "from lib.api import Lavender",
        "",
        f'model = Lavender.from_pretrained("{name}")  # device="cuda" for a GPU',
        'model.caption("video.mp4")',
        'model.answer("video.mp4", "what is the man doing?")',
        'model.answer("video.mp4", "what is the man doing?", ["cooking", "singing", "running"])',
        'model.retrieve(["a man is cooking", "a dog runs"], ["a.mp4", "b.mp4"], top_k=1)',
        'model.match("video.mp4", "a man is cooking")',
        "```",
        "",
        "```",
        f"python -m lib.predict --ckpt {name} caption videos/",
        f'python -m lib.predict --ckpt {name} answer video.mp4 --question "what is the man doing?"',
        "```",
        "",
        "## Tasks",
        "",
        "| kind | trained on | text length | settings |",
        "|---|---|---:|---|",
    ]
    for kind in kinds:
        for entry in tasks[kind]:
            hidden = ("name", "size_txt", "video", "answers")
            shown = {k: v for k, v in entry.items() if k not in hidden and v is not None}
            if kind == "qa_open":
                shown["answers"] = f"{len(entry.get('answers', []))} candidates"
            settings = ", ".join(f"{k} {v}" for k, v in shown.items())
            lines.append(f"| {kind} | {entry['name']} | {entry['size_txt']} | {settings} |")
    lines += [
        "",
        "## Inputs",
        "",
        f"- A video file becomes {video.get('frames_per_video')} stored frames exactly as the frame "
        f"extractor made the training data ({video.get('frame_rule')}; "
        f"JPEG quality {video.get('jpeg_quality')}, "
        f"short side {video.get('size_short') or 'kept'}; source: {video.get('source')}).",
        f"- A clip is {video.get('size_frame')} of the stored frames (evenly spaced, evaluation rule), "
        f"{video.get('size_img')}x{video.get('size_img')} pixels, transform {video.get('transform')}, "
        "ImageNet-normalised.",
        "",
        "## Evaluation protocol",
        "",
    ]
    lines += [f"- {kind} ({e['name']}): {protocol(kind, e)}" for kind in kinds for e in tasks[kind]]
    lines += ["", "## Results", ""]
    if metrics:
        lines += [f"{label}:" if label else "Metrics:", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet.")
    arch_keys = ("swin_size", "swin_embed_dim", "swin_depths", "hidden_size", "num_layers")
    arch = {k: config.get(k) for k in arch_keys}
    lines += [
        "",
        "## Model",
        "",
        f"{n_params / 1e6:.1f} M parameters; "
        + ", ".join(f"{k} {v}" for k, v in arch.items())
        + f"; vocabulary {config.get('vocab_size')}.",
        "",
        "## Training",
        "",
        "Data: "
        + "; ".join(
            f"{t.get('family')} {t.get('task')} ({t.get('dataset')})" for t in inference.get("trained_on", [])
        )
        + ".  ",
        "Run: " + ", ".join(f"{k} {v}" for k, v in inference.get("training", {}).items()) + ".",
    ]
    if inference.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in inference["notes"]]]
    return "\n".join(lines) + "\n"


def protocol(kind: str, entry: Mapping[str, Any]) -> str:
    """One sentence on how a task of this checkpoint is evaluated."""
    tf = TF_SCORES.get(entry.get("tf_score", "prob"), "")
    if kind == "qa_open":
        space = (
            f"answers ranked among {len(entry.get('answers', []))} candidates by their mean per-piece "
            "log-probability"
            if entry.get("answers")
            else "the arg-max over the whole vocabulary at one [MASK] (the reference protocol)"
        )
        return PROTOCOLS[kind].format(size_test=entry.get("size_test") or "= items in the file", space=space)
    if kind == "qa_choice":
        how = (
            "arg-max of the option digits at the [MASK] of one sequence holding every option"
            + (
                f", their probabilities averaged over {entry['shifts']} cyclic shifts of the option order"
                if entry.get("shifts", 1) > 1
                else ""
            )
            if entry.get("style") == "sequence"
            else f"arg-max over options of the true/false score, {tf}"
        )
        return PROTOCOLS[kind].format(style=entry.get("style"), how=how)
    if kind == "caption":
        beam = int(entry.get("beam_size", 1))
        decoding = "greedy" if beam == 1 else f"beam search, {beam} beams"
        return PROTOCOLS[kind].format(decoding=decoding, max_gen_length=entry.get("max_gen_length"))
    return PROTOCOLS[kind].format(tf_score=tf)


def save_model_fn(tokenizer, cfg: Config, tasks: Sequence[Task]) -> Callable[[torch.nn.Module, Path], None]:
    """The engine's hook that writes a complete checkpoint folder (see :func:`write_checkpoint`), its card
    carrying the run's latest evaluation; the final test numbers come later with :func:`record_metrics`."""
    settings = inference_settings(cfg, tasks)

    def save(model: torch.nn.Module, folder: Path) -> None:
        metrics, label = latest_eval_metrics(cfg.path_output)
        write_checkpoint(model, folder, tokenizer, settings, metrics, label)

    return save
