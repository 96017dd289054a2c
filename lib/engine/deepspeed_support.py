"""DeepSpeed support of the loop: the config handed to DeepSpeed, its start, and its checkpoints.

A DeepSpeed checkpoint is the ``ds/`` folder inside a training checkpoint (`lib.engine.checkpointing`),
written by DeepSpeed itself; DeepSpeed reads it back with ``torch.load(weights_only=False)``, which runs any
code a pickle names. So:

* after saving, rank 0 writes ``ds_sha256.json`` beside ``ds/`` (atomically): the SHA-256 of every file of
  ``ds/``. A resume verifies it before DeepSpeed opens anything (:func:`verify_checkpoint`) and refuses a
  folder without it, with files missing, added or changed: a folder this project did not write. (Whoever
  forges both the files and the list is not stopped by this; the loads below are what stop a pickle.)
* DeepSpeed's loads during a resume go through ``torch.load(weights_only=True)``, with only the DeepSpeed
  classes its ZeRO files hold allowed (:func:`load_checkpoint`); the model states the evaluation of a
  DeepSpeed checkpoint reads are loaded weights-only too (:func:`load_model_states`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.engine.config import Config, ConfigError
from lib.utils.atomic import write_json

DS_TAG = "ds"  # the DeepSpeed checkpoint's folder (its "tag") inside a training checkpoint
MANIFEST = "ds_sha256.json"  # beside ds/: {"format": 1, "files": {"ds/NAME": sha256 hex}}
MODEL_STATES = "mp_rank_00_model_states.pt"
_MANIFEST_FORMAT = 1


class UntrustedCheckpointError(RuntimeError):
    """A checkpoint folder whose DeepSpeed files were not written by this project (or were altered)."""


# ---- config


def deepspeed_config(cfg: Config, micro_batch: int, dtype: torch.dtype | None) -> dict[str, Any]:
    """The DeepSpeed config: cfg.deepspeed_config (checked) or one built from the engine keys.

    Batch size and accumulation always come from the engine; bf16 / fp16 follow cfg.precision.
    """
    if cfg.deepspeed_config:
        ds = _read_deepspeed_json(Path(cfg.deepspeed_config), cfg.grad_accum)
    else:
        ds = {
            "gradient_clipping": max(cfg.max_grad_norm, 0.0),
            "zero_optimization": {"stage": cfg.zero_stage},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
    wanted = {torch.bfloat16: {"bf16"}, torch.float16: {"fp16"}}.get(dtype, set())  # type: ignore[arg-type]
    enabled = {name for name in ("bf16", "fp16") if ds.get(name, {}).get("enabled")}
    if enabled and enabled != wanted:
        raise ConfigError(
            f"{cfg.deepspeed_config} enables {sorted(enabled)} but --precision is {cfg.precision}; "
            f"make them agree"
        )
    for name in wanted - enabled:
        ds[name] = {"enabled": True, **({"loss_scale": 0} if name == "fp16" else {})}
    ds["train_micro_batch_size_per_gpu"] = micro_batch
    ds["gradient_accumulation_steps"] = cfg.grad_accum
    ds.pop("train_batch_size", None)
    return ds


def _read_deepspeed_json(path: Path, grad_accum: int) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"--deepspeed_config {path} does not exist")
    ds = json.loads(path.read_text())
    for section in ("optimizer", "scheduler"):
        if section in ds:
            raise ConfigError(
                f"{path}: remove the {section!r} section; the engine builds AdamW and the "
                f"warm-up schedule from lr / decay / betas / warmup_ratio"
            )
    if ds.get("gradient_accumulation_steps", grad_accum) != grad_accum:
        raise ConfigError(f"{path}: gradient_accumulation_steps differs from --grad_accum {grad_accum}")
    if ds.get("zero_optimization", {}).get("stage", 0) > 2:
        raise ConfigError(f"{path}: ZeRO stage 3 is not supported (evaluation reads whole parameters)")
    return ds


# ---- start


def initialize(
    step_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    ds_cfg: dict[str, Any],
    device: torch.device,
) -> Any:
    """Start DeepSpeed's process group and wrap ``step_module`` (with the engine's optimizer and schedule)."""
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if device.type == "cuda" else "cpu")
    import deepspeed

    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    engine, _, _, _ = deepspeed.initialize(
        model=step_module, optimizer=optimizer, lr_scheduler=scheduler, config=ds_cfg
    )
    return engine


def can_skip_steps(ds_cfg: dict[str, Any]) -> bool:
    """Whether DeepSpeed skips a step by itself on a non-finite gradient (only with bf16 / fp16)."""
    return bool(ds_cfg.get("bf16", {}).get("enabled") or ds_cfg.get("fp16", {}).get("enabled"))


# ---- checkpoints


def save_checkpoint(engine: Any, folder: Path, is_main: bool, barrier: Callable[[], None]) -> None:
    """DeepSpeed's checkpoint into ``folder/ds`` (every rank), then its manifest (rank 0, after all ranks)."""
    engine.save_checkpoint(str(folder), tag=DS_TAG, save_latest=False)
    barrier()
    if is_main:
        write_manifest(folder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ds_files(folder: Path) -> dict[str, Path]:
    """``{"ds/NAME": path}`` of everything under ``folder/ds`` (a link or a non-file is listed as found)."""
    root = folder / DS_TAG
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(root.rglob("*"))
        if not p.is_dir() or p.is_symlink()
    }


def write_manifest(folder: Path) -> Path:
    """Write ``folder/ds_sha256.json``: the SHA-256 of every file of ``folder/ds``."""
    files = {name: _sha256(path) for name, path in _ds_files(folder).items()}
    return write_json(
        folder / MANIFEST, {"format": _MANIFEST_FORMAT, "files": files}, indent=1, sort_keys=True
    )


def verify_checkpoint(folder: Path) -> None:
    """Raise :class:`UntrustedCheckpointError` unless ``folder/ds`` holds exactly the files of its manifest,
    each with its SHA-256 (and nothing but plain files). Call it before DeepSpeed reads the folder."""
    manifest = folder / MANIFEST

    def refuse(why: str) -> UntrustedCheckpointError:
        return UntrustedCheckpointError(
            f"refusing to resume DeepSpeed from {folder}: {why}. DeepSpeed unpickles the files of its ds/ "
            f"folder, which can run code, so a resume only accepts a checkpoint folder written by this "
            f"project's trainer ({MANIFEST} lists the SHA-256 of every file of ds/, and they must match). "
            f"Resume from a checkpoint of your own run, or start a new run (--resume false)."
        )

    try:
        listed = json.loads(manifest.read_text())
    except FileNotFoundError:
        raise refuse(f"it has no {MANIFEST}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise refuse(f"{MANIFEST} is unreadable ({e})") from None
    if (
        not isinstance(listed, dict)
        or listed.get("format") != _MANIFEST_FORMAT
        or not isinstance(listed.get("files"), dict)
    ):
        raise refuse(f"{MANIFEST} is not a manifest of format {_MANIFEST_FORMAT}")
    expected: dict[str, str] = listed["files"]
    found = _ds_files(folder)
    if not found:
        raise refuse(f"it has no {DS_TAG}/ files")
    if set(found) != set(expected):
        missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
        raise refuse(f"its {DS_TAG}/ files differ from {MANIFEST} (missing {missing}, not listed {extra})")
    for name, path in found.items():
        if path.is_symlink() or not path.is_file():
            raise refuse(f"{name} is not a plain file")
        if _sha256(path) != expected[name]:
            raise refuse(f"{name} does not match its SHA-256 in {MANIFEST}")


def _allowed_deepspeed_globals() -> list[Any]:
    """The DeepSpeed classes a ZeRO optimizer-state file holds (nothing that runs code when rebuilt)."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, LossScaler, DynamicLossScaler, fragment_address]  # DynamicLossScaler: fp16 runs


def _weights_only_load(path: str, map_location: Any = None) -> Any:
    with torch.serialization.safe_globals(_allowed_deepspeed_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(engine: Any, folder: Path) -> None:
    """DeepSpeed's own resume from ``folder/ds`` (module, optimizer, schedule) with weights-only loads.

    DeepSpeed reads every file through ``engine.checkpoint_engine.load`` (``weights_only=False`` in
    DeepSpeed 0.19); for this call that method is replaced by a weights-only load.
    """
    checkpoint_engine = engine.checkpoint_engine
    checkpoint_engine.load = _weights_only_load  # an instance attribute: shadows the class's method
    try:
        engine.load_checkpoint(
            str(folder), tag=DS_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
        )
    finally:
        del checkpoint_engine.load


def load_model_states(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a DeepSpeed checkpoint folder (weights-only), keyed as the trainer's model."""
    states = torch.load(folder / DS_TAG / MODEL_STATES, map_location="cpu", weights_only=True)
    return {k.removeprefix("model."): v for k, v in states["module"].items()}  # load_state_dict casts dtypes
