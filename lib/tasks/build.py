"""From a run config to a model: backbones from local folders, then a checkpoint.

Initialisation follows LAVENDER: the Video Swin from Kinetics (``vis_backbone_init: 3d``) or ImageNet
(``2d``) weights under ``_models/video_swin_transformer/``, or random; the text embeddings, fusion encoder
and MLM head from a local Hugging Face BERT folder (``fusion_encoder``; ``fusion_encoder_rand_init`` keeps
only its shape). ``path_ckpt`` (a reference ``.pt`` or one of our model folders) then overrides everything
it holds; a path that does not exist is an error, never a silent fresh start.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from lib.engine.checkpointing import require_existing
from lib.engine.config import Config, ConfigError
from lib.model.bert import BertSelfAttention
from lib.model.checkpoint import (
    MODEL_WEIGHTS,
    bert_config_fields,
    build_from_pretrained_parts,
    load_checkpoint,
    read_bert_config,
)
from lib.model.config import LavenderConfig
from lib.model.lavender import LavenderModel
from lib.tasks.common import resize_on_device, resolve_pretrained_dir

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
        "contrastive_dim": cfg.contrastive_dim,
        "contrastive_temp": cfg.contrastive_temp,
        "swin_temporal_windows": cfg.vis_temporal_windows,
        "swin_local_window": cfg.vis_local_window,
        "long_form_dim": cfg.long_form_dim,
        "max_sentences": cfg.max_sentences,
        "sentence_layers": cfg.sentence_layers,
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
