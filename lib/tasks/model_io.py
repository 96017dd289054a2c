"""From a run config to a model (backbones from local folders, or a checkpoint), and back to a model folder.

Initialisation follows LAVENDER: the Video Swin from Kinetics (``vis_backbone_init: 3d``) or ImageNet
(``2d``) weights under ``_models/video_swin_transformer/``, or random; the text embeddings, fusion encoder
and MLM head from a local Hugging Face BERT folder (``fusion_encoder``; ``fusion_encoder_rand_init`` keeps
only its shape). ``path_ckpt`` (a reference ``.pt`` or one of our model folders) then overrides everything
it holds; a path that does not exist is an error, never a silent fresh start.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from lib.engine.checkpointing import require_existing
from lib.engine.config import Config
from lib.model.checkpoint import (
    MODEL_WEIGHTS,
    bert_config_fields,
    build_from_pretrained_parts,
    load_checkpoint,
    read_bert_config,
    save_model_dir,
)
from lib.model.lavender import LavenderConfig, LavenderModel
from lib.tasks.common import resolve_pretrained_dir

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
    }
    for ours, key in (
        ("swin_embed_dim", "vis_embed_dim"),
        ("swin_depths", "vis_depths"),
        ("swin_heads", "vis_heads"),
        ("swin_window", "vis_window"),
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
    return model


def keep_fusion_layers(model: LavenderModel, n: int) -> LavenderModel:
    """Keep the first ``n`` fusion layers (e.g. 2 of MiniLM's 6 for fast tests)."""
    if not 0 < n <= len(model.trsfr.layer):
        raise ValueError(f"fusion_layers={n}: the fusion encoder has {len(model.trsfr.layer)} layers")
    model.trsfr.layer = model.trsfr.layer[:n]
    model.config = dataclasses.replace(model.config, num_layers=n)
    return model


def save_model_fn(tokenizer) -> Callable[[torch.nn.Module, Path], None]:
    """The engine's hook that writes an inference folder: config.json, model.safetensors, tokenizer files."""

    def save(model: torch.nn.Module, folder: Path) -> None:
        save_model_dir(model, folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))

    return save
