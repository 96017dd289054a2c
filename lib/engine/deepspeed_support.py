"""DeepSpeed support of the loop: the config handed to DeepSpeed and its start."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lib.engine.config import Config, ConfigError


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
