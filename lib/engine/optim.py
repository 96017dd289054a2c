"""AdamW with LAVENDER's parameter groups and the warm-up + linear-decay schedule.

Weight decay: every parameter gets `decay` except biases, all 1-D parameters and every parameter of a
normalisation module (LayerNorm, GroupNorm, BatchNorm, ...), decided by module type and shape. The reference
decides by NAME (`bias`, `LayerNorm.bias`, `LayerNorm.weight`), so Video Swin's `norm1/norm2/norm` weights and
other 1-D scales got decay there and do not here.

Learning rate: parameters whose name contains "swin." get `lr * vis_backbone_lr_mul` (as in the reference).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{param_name}" if module_name else param_name
            if isinstance(module, _NORM_TYPES) or param.ndim <= 1 or param_name == "bias":
                names.add(full)
    return names


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, vis_lr_mul: float = 1.0
) -> list[dict[str, Any]]:
    """Trainable parameters split into (swin | rest) x (decay | no decay); empty groups are left out.

    Each group carries a "name" ("swin_decay", "swin_no_decay", "decay", "no_decay") for logging.
    """
    no_decay = _no_decay_names(model)
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_swin = "swin." in name
        decays = name not in no_decay
        key = ("swin_" if is_swin else "") + ("decay" if decays else "no_decay")
        group = groups.setdefault(
            key,
            {
                "name": key,
                "params": [],
                "param_names": [],
                "lr": lr * (vis_lr_mul if is_swin else 1.0),
                "weight_decay": weight_decay if decays else 0.0,
            },
        )
        group["params"].append(param)
        group["param_names"].append(name)
    order = ("swin_decay", "swin_no_decay", "decay", "no_decay")
    return [groups[k] for k in order if k in groups]


def build_optimizer(model: nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW(betas=cfg.betas) over `param_groups(model, cfg.lr, cfg.decay, cfg.vis_backbone_lr_mul)`, fused
    where the parameters allow it."""
    groups = param_groups(model, cfg.lr, cfg.decay, cfg.vis_backbone_lr_mul)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, fused=_can_fuse(groups))


def _can_fuse(groups: list[dict[str, Any]]) -> bool:
    """torch's fused AdamW kernel (one pass over each tensor; ~5x faster than the per-tensor loop on CPU)
    takes floating-point tensors on one CPU or CUDA device."""
    params = [p for g in groups for p in g["params"]]
    devices = {p.device for p in params}
    return (
        len(devices) == 1
        and next(iter(devices)).type in ("cpu", "cuda")
        and all(p.is_floating_point() for p in params)
    )


def warmup_linear_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """LR factor for optimizer step `step` (0-based): (step+1)/warmup during warm-up, then linear to 0.

    The first update already has a non-zero lr and the last update (step total-1) still has a small one.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float) -> LambdaLR:
    """LambdaLR with `warmup_linear_factor`; warm-up lasts round(warmup_ratio * total_steps) steps."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be positive, got {total_steps}")
    warmup = round(warmup_ratio * total_steps)
    return LambdaLR(optimizer, _WarmupLinear(total_steps, warmup))


class _WarmupLinear:
    """Picklable lr lambda (LambdaLR stores callable objects' state in its state_dict)."""

    def __init__(self, total_steps: int, warmup_steps: int):
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps

    def __call__(self, step: int) -> float:
        return warmup_linear_factor(step, self.total_steps, self.warmup_steps)
