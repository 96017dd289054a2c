"""Mixed precision of the loop and of inference: which autocast dtype a device gets, and the autocast itself.

``precision auto`` is bf16 on GPUs that have it (else fp16) and on CPUs with native bf16 matrix products
(AVX-512 BF16 / AMX); fp32 elsewhere, where emulated bf16 would be a large slowdown.
"""

from __future__ import annotations

import contextlib

import torch

from lib.engine.config import ConfigError
from lib.engine.logging import get_logger


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AVX-512 BF16 or AMX).

    Without them (e.g. AVX2-only CPUs) PyTorch emulates bf16 and a matrix product runs tens of times slower
    than in fp32 (0.7 vs 45 GFLOP/s on a 2-core AMD EPYC, bench/demo_step.py): bf16 autocast would be a
    slowdown.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for cfg.precision on `device` (None = plain fp32).

    "auto": bf16 on a GPU that has it (else fp16); on the CPU bf16 only where it is native
    (:func:`cpu_has_fast_bf16`), else fp32. An explicit "bf16" on a CPU without it is honoured with a warning.
    """
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_fast_bf16() else None
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        get_logger().warning(
            "--precision bf16 on a CPU without native bf16 (no AVX-512 BF16 / AMX): matrix products are "
            "emulated and much slower than fp32; --precision auto picks fp32 here"
        )
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """torch.autocast for `dtype`, or nothing for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
