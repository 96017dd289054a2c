"""From a run config to a model: backbones from local folders, then a checkpoint.

Initialisation follows LAVENDER: the Video Swin from Kinetics (``vis_backbone_init: 3d``) or ImageNet
(``2d``) weights under ``_models/video_swin_transformer/``, or random; the text embeddings, fusion encoder
and MLM head from a local Hugging Face BERT folder (``fusion_encoder``; ``fusion_encoder_rand_init`` keeps
only its shape). ``path_ckpt`` (a reference ``.pt`` or one of our model folders) then overrides everything
it holds; a path that does not exist is an error, never a silent fresh start.

A ``path_ckpt`` must fit the model: model tensors it lacks and tensors it has that the model lacks are an
error listing them, except the tensors of :data:`CKPT_MAY_LACK` (reported at WARNING; they keep their
initialisation), the derived buffers the model recomputes and the reference's other heads (VIOLET's
``fc_mvm``, task-specific ``fc.*``; reported as ignored). ``ckpt_partial: true`` loads a checkpoint that
lacks more (or has more), reporting it; a checkpoint that fits less than :data:`MIN_FIT` of the model's
tensors is always an error (a different model, not a partial one).
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
    DERIVED_BUFFERS,
    MODEL_WEIGHTS,
    CheckpointError,
    LoadReport,
    bert_config_fields,
    build_from_pretrained_parts,
    load_checkpoint,
    read_bert_config,
)
from lib.model.config import LavenderConfig
from lib.model.encoders.audio import AudioEncoderConfig, load_ast_weights
from lib.model.lavender import LavenderModel, LearnedSparseMask
from lib.model.long_form import stage_one_prefixes
from lib.tasks.common import resize_on_device, resolve_pretrained_dir

logger = logging.getLogger(__name__)

SWIN_DIR = Path("_models/video_swin_transformer")
CKPT_MAY_LACK = ("emb_task", "enc_img.emb_odr", "emb_type.", "vtc.", "sparse_mask.")
"""Model tensors (names or prefixes ending in ".") a ``path_ckpt`` may lack: the task-token table and the
frame-order embedding (VIOLET and SwinBERT checkpoints have neither), the modality-type embeddings, the
contrastive head and the learned sparse mask (newer than LAVENDER's checkpoints; the mask then starts from
SwinBERT's random init), and, by :func:`may_lack`, the encoder of every
context modality other than video (e.g. audio, which LAVENDER never had)."""
MIN_FIT = 0.5
"""A ``path_ckpt`` must fill at least this fraction of the model's tensors, ``ckpt_partial`` or not."""


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
        "contrastive_text_pool": cfg.contrastive_text_pool,
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
    fields["modalities"] = tuple(cfg.modalities)
    if "audio" in cfg.modalities:
        fields["encoder_options"] = {"audio": audio_encoder_options(cfg)}
    elif cfg.audio_encoder or cfg.audio_ckpt:
        raise ConfigError(f"audio_encoder / audio_ckpt need 'audio' in modalities (got {cfg.modalities})")
    fields.update(bert_config_fields(read_bert_config(resolve_pretrained_dir(cfg.fusion_encoder))))
    for ours, key in (
        ("hidden_size", "fusion_hidden_size"),
        ("num_heads", "fusion_heads"),
        ("intermediate_size", "fusion_intermediate_size"),
    ):
        if cfg[key] is not None:
            fields[ours] = cfg[key]
    return LavenderConfig(**fields)


def audio_encoder_options(cfg: Config) -> dict:
    """``encoder_options["audio"]`` of a run config: ``audio_encoder`` with the slice geometry of the audio
    features (``audio_mel_bins`` x ``audio_slice_frames``, at least ``audio_slices`` slice positions),
    checked by the encoder's own config (an error names the key)."""
    options = dict(cfg.audio_encoder)
    for ours, key in (("n_mels", "audio_mel_bins"), ("slice_frames", "audio_slice_frames")):
        if ours in options and options[ours] != cfg[key]:
            raise ConfigError(
                f"audio_encoder {ours}={options[ours]} differs from {key}={cfg[key]}; set {key}"
            )
        options[ours] = cfg[key]
    options["max_slices"] = max(
        int(options.get("max_slices", AudioEncoderConfig.max_slices)), cfg.audio_slices
    )
    try:
        AudioEncoderConfig(**options)
    except (TypeError, ValueError) as e:
        known = sorted(f.name for f in dataclasses.fields(AudioEncoderConfig))
        raise ConfigError(f"audio_encoder {cfg.audio_encoder}: {e} (keys: {known})") from None
    return options


def swin_checkpoint(cfg: Config) -> tuple[Path | None, str]:
    """The local Video Swin weights ``vis_backbone_init`` asks for (None for random)."""
    init = cfg.vis_backbone_init
    if cfg.vis_backbone_ckpt and init == "random":
        raise ConfigError(
            f"vis_backbone_ckpt {cfg.vis_backbone_ckpt} is read by vis_backbone_init 3d or 2d, not 'random'"
        )
    if init == "random" or cfg.path_ckpt:
        return None, "random"
    if cfg.vis_backbone_ckpt:
        return Path(require_existing(cfg.vis_backbone_ckpt, "vis_backbone_ckpt")), init
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
    if cfg.sparse_mask:
        add_sparse_mask(model, cfg)
    elif cfg.sparse_mask_hard:
        raise ConfigError("sparse_mask_hard binarises the learned sparse mask: set sparse_mask true")
    if tokenizer is not None and len(tokenizer) > model.config.vocab_size:
        raise ValueError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {model.config.vocab_size}"
        )
    if cfg.audio_ckpt and not cfg.path_ckpt:
        report = load_ast_weights(model, require_existing(cfg.audio_ckpt, "audio_ckpt"))
        if report["missing"] or report["unexpected"]:
            raise CheckpointError(
                f"audio_ckpt {cfg.audio_ckpt} is not an AST checkpoint of this audio encoder's size: missing "
                f"{_listed(report['missing'])}; unexpected {_listed(report['unexpected'])}"
            )
        model.load_reports["audio"] = report
    for name, report in getattr(model, "load_reports", {}).items():
        logger.info("%s weights: %s", name, report)
    stage_frozen = long_form_stage_frozen(cfg, model)  # a config error before any weights are read
    if cfg.path_ckpt:
        path = Path(require_existing(cfg.path_ckpt, "path_ckpt"))
        weights = path / MODEL_WEIGHTS if path.is_dir() else path
        check_fit(model, load_checkpoint(model, weights, strict=False), cfg.ckpt_partial)
    freeze_params(model, [*cfg.freeze_params, *stage_frozen])
    return model


def long_form_stage_frozen(cfg: Config, model: LavenderModel) -> list[str]:
    """What ``long_stage`` 2 freezes: LF-VILA's stage-1 weights, read from ``path_ckpt`` (a stage-1 run)."""
    if cfg.long_stage != 2:
        return []
    if not cfg.path_ckpt:
        raise ConfigError("long_stage 2 trains on frozen stage-1 weights: set path_ckpt (stage 1's model)")
    try:
        return stage_one_prefixes(model)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def may_lack(model: LavenderModel, key: str) -> bool:
    """Whether ``key`` is a model tensor a checkpoint may lack (:data:`CKPT_MAY_LACK`)."""
    prefixes = [*CKPT_MAY_LACK]
    for spec in getattr(model, "context_encoders", ()):
        if spec.modality != "video":
            prefixes.append(spec.key_prefix + ".")
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in prefixes)


def _listed(keys: list[str], most: int = 20) -> str:
    return ", ".join(keys[:most]) + (f", ... (+{len(keys) - most} more)" if len(keys) > most else "")


def check_fit(model: LavenderModel, report: LoadReport, partial: bool) -> None:
    """Raise :class:`CheckpointError` unless the loaded ``path_ckpt`` (``report``) fits the model (see the
    module docstring); log what it lacked or left out."""
    tensors = [k for k in model.state_dict() if k.rsplit(".", 1)[-1] not in DERIVED_BUFFERS]
    lacking = set(report.missing + report.initialised)
    filled = sum(k not in lacking for k in tensors)
    allowed = sorted(k for k in lacking if k in report.initialised or may_lack(model, k))
    missing = sorted(lacking - set(allowed))
    if filled < MIN_FIT * len(tensors):
        raise CheckpointError(
            f"--path_ckpt {report.source} fits only {filled} of the model's {len(tensors)} tensors "
            f"(less than {MIN_FIT:.0%}): it is not a checkpoint of this model (another model size, or "
            f"another model altogether?); --ckpt_partial does not change that.\n{report}"
        )
    if (missing or report.unexpected) and not partial:
        lines = [f"--path_ckpt {report.source} does not fit the model:"]
        if missing:
            lines.append(f"  model tensors it lacks ({len(missing)}): {_listed(missing)}")
        if report.unexpected:
            lines.append(
                f"  tensors the model lacks ({len(report.unexpected)}): {_listed(report.unexpected)}"
            )
        lines.append(
            "Check that the config builds the model the checkpoint was trained as (vis_backbone_size, "
            "fusion_encoder, ...); to load it anyway, pass --ckpt_partial true (the tensors it lacks keep "
            "their initialisation)."
        )
        raise CheckpointError("\n".join(lines))
    logger.info("loaded %s", report)
    if allowed or missing or report.unexpected:
        logger.warning(
            "%s: %d of %d model tensors loaded; kept at their initialisation: %s%s",
            report.source, filled, len(tensors), _listed(allowed + missing) or "none",
            f"; not used: {_listed(report.unexpected)}" if report.unexpected else "",
        )  # fmt: skip


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


def context_tokens(model: LavenderModel, cfg: Config) -> int:
    """How many context tokens (every modality of the model) one clip of the run gives: counted by encoding
    a blank clip (``size_frame`` frames of ``size_img``, ``audio_slices`` slices), so the count is the
    encoders' own."""
    shapes = {
        "video": (1, cfg.size_frame, 3, cfg.size_img, cfg.size_img),
        "audio": (1, cfg.audio_slices, cfg.audio_mel_bins, cfg.audio_slice_frames),
    }
    inputs = {m: torch.zeros(shapes[m]) for m in model.config.modalities}
    training = model.training
    with torch.no_grad():
        tokens, _ = model.eval().encode(inputs)
    model.train(training)
    return tokens.shape[1]


def add_sparse_mask(model: LavenderModel, cfg: Config) -> None:
    """Give the model SwinBERT / AVLFormer's learned sparse mask (``sparse_mask``), sized for the run's
    clips."""
    config = dataclasses.replace(
        model.config, sparse_mask_tokens=context_tokens(model, cfg), sparse_mask_hard=cfg.sparse_mask_hard
    )
    model.config = config
    model.sparse_mask = LearnedSparseMask(config.sparse_mask_tokens, config.sparse_mask_hard)


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
