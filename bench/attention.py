"""Fusion attention on CPU: torch SDPA vs the explicit softmax(QK^T)V path, forward and forward+backward.

Decides which path ``lib.model.lavender.BertSelfAttention`` takes on CPU (see the comment there). Shapes are
(batch, heads, tokens, head dim) with a key-padding mask, as in the fusion encoder.

    .venv/bin/python bench/attention.py
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

SHAPES = ((16, 12, 105, 32), (64, 12, 40, 32), (8, 12, 300, 64))


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    scores = scores.masked_fill(~mask, torch.finfo(q.dtype).min)
    return torch.matmul(scores.softmax(-1), v)


def best_ms(fn: Callable[[], torch.Tensor], backward: bool, repeats: int = 6) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            out = fn()
            if backward:
                out.sum().backward()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main() -> int:
    torch.manual_seed(0)
    command = " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    print(f"command: {command}; threads {torch.get_num_threads()}\n")
    print("| dtype | B, heads, N, d | SDPA fwd ms | SDPA fwd+bwd | explicit fwd ms | explicit fwd+bwd |")
    print("|---|---|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        for b, h, n, d in SHAPES:
            q, k, v = (torch.randn(b, h, n, d, dtype=dtype, requires_grad=True) for _ in range(3))
            mask = torch.ones(b, 1, 1, n, dtype=torch.bool)
            mask[..., -5:] = False

            paths = (partial(sdpa, q, k, v, mask), partial(explicit, q, k, v, mask))
            cells = [best_ms(fn, bw) for fn in paths for bw in (False, True)]
            name = str(dtype).removeprefix("torch.")
            print(f"| {name} | {b}, {h}, {n}, {d} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
