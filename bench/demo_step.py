"""What one training step of each demo stream costs on this machine (forward + backward + AdamW step).

The demo (`python -m lib.demo`) fits its training to a wall-clock budget from these costs
(`lib.demo.timing`); this prints them per stream with the fusion rows and text tokens of a batch and the
share of the step spent in the Video Swin (measured in the same run by timing the video encoder alone) and in
matrix products (torch profiler), after this CPU's fp32 and bf16 matmul throughput.

    .venv/bin/python bench/demo_step.py [--steps 3] [--data _datasets/demo] [--key value ...]
        (demo-config overrides, e.g. --precision fp32 --fusion_layers 1)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.demo.synthetic import make_demo_dataset  # noqa: E402
from lib.demo.timing import mean_step_seconds, time_train_steps  # noqa: E402
from lib.engine.precision import autocast, resolve_precision  # noqa: E402
from lib.model.layouts import Layout  # noqa: E402
from lib.tasks.run import prepare  # noqa: E402


def rows_and_tokens(batch) -> tuple[int, int]:
    """Fusion rows and text tokens (padding included) of the layouts anywhere in a collated batch."""
    if isinstance(batch, Layout):
        return int(batch.ids.shape[0]), int(batch.ids.numel())
    parts = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, list | tuple) else ()
    counts = [rows_and_tokens(x) for x in parts]
    return sum(r for r, _ in counts), sum(t for _, t in counts)


def swin_seconds(model, batch: dict, dtype) -> float:
    """Forward + backward of the video encoder alone on the batch's clips."""
    started = time.perf_counter()
    with autocast(torch.device("cpu"), dtype):
        feat, _ = model.encode_video(batch["video"])
    feat.float().sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def matmul_gflops(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n matmul in ``dtype`` on this CPU (what ``precision auto`` decides on)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        done += 1
    return 2 * n**3 * done / (time.perf_counter() - started) / 1e9


def matmul_share(model, stream, dtype) -> float:
    """Share of one optimizer-free training step (forward + backward) spent in matrix products."""
    from torch.profiler import ProfilerActivity, profile

    batch = stream.collate_fn([stream.dataset[i] for i in range(stream.batch_size)])
    with profile(activities=[ProfilerActivity.CPU]) as prof, autocast(torch.device("cpu"), dtype):
        stream.step_fn(model, batch)["loss"].float().backward()
    model.zero_grad(set_to_none=True)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    matmuls = ("aten::mm", "aten::addmm", "aten::bmm")
    return sum(e.self_cpu_time_total for e in events if e.key in matmuls) / total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO / "_datasets" / "demo", help="built if missing")
    p.add_argument("--steps", type=int, default=3, help="timed steps per stream (after one warm-up)")
    args, overrides = p.parse_known_args(argv)
    if not (args.data / "meta_demo.json").is_file():
        make_demo_dataset(args.data, seed=0, n_train=200, workers=2)
    config = str(REPO / "_args/args_demo_multi-task.json")
    argv = ["--config", config, "--data_dir", str(args.data), *overrides]
    cfg, _, model, tasks = prepare("multi-task", argv)
    streams = [s for t in tasks for s in t.train_streams()]
    seconds = time_train_steps(model, streams, cfg, steps=args.steps)
    dtype = resolve_precision(cfg.precision, torch.device("cpu"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}, autocast {dtype}")  # fmt: skip
    print(f"matmul 1024x1024 on this CPU: fp32 {matmul_gflops(torch.float32):.1f} GFLOP/s, "
          f"bf16 {matmul_gflops(torch.bfloat16):.1f} GFLOP/s")  # fmt: skip
    print("\n| stream | ms/step | fusion rows | text tokens | Swin share | matmul share |")
    print("|---|---:|---:|---:|---:|---:|")
    for stream in streams:
        batch = stream.collate_fn([stream.dataset[i] for i in range(stream.batch_size)])
        rows, tokens = rows_and_tokens(batch)
        swin = min(swin_seconds(model, batch, dtype) for _ in range(2))
        ms = 1000 * seconds[stream.name]
        swin_share, mm_share = swin / seconds[stream.name], matmul_share(model, stream, dtype)
        print(f"| {stream.name} | {ms:.0f} | {rows} | {tokens} | {swin_share:.0%} | {mm_share:.0%} |")
    mean = mean_step_seconds(seconds, streams, cfg)
    total = cfg.size_epoch * cfg.steps_per_epoch
    print(f"\nmean step (streams drawn as in training): {1000 * mean:.0f} ms → {total} steps ≈ "
          f"{mean * total / 60:.1f} min")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
