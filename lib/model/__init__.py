"""The LAVENDER model: Video Swin + BERT fusion + one MLM head, and its checkpoint formats."""

from .checkpoint import (
    CheckpointError,
    LoadReport,
    config_from_reference_args,
    convert_reference_checkpoint,
    load_bert_weights,
    load_checkpoint,
    load_model_dir,
    load_swin_checkpoint,
    read_state_dict,
    save_model_dir,
)
from .lavender import TASK_TOKEN_IDS, LavenderConfig, LavenderModel, true_false_score
from .video_swin import SWIN_SIZES, SwinTransformer3D

__all__ = [
    "SWIN_SIZES",
    "TASK_TOKEN_IDS",
    "CheckpointError",
    "LavenderConfig",
    "LavenderModel",
    "LoadReport",
    "SwinTransformer3D",
    "config_from_reference_args",
    "convert_reference_checkpoint",
    "load_bert_weights",
    "load_checkpoint",
    "load_model_dir",
    "load_swin_checkpoint",
    "read_state_dict",
    "save_model_dir",
    "true_false_score",
]
