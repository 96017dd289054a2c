"""Clip-loading throughput: TSV row → (5, 3, 224, 224) train tensor, against the bare JPEG-decode floor.

Both paths run in this one process on the same rows (the reference MSR-VTT frames, 320x240, rows repeated),
with one thread each (as in a DataLoader worker), in alternating rounds so that machine noise hits both:

  floor        cv2.imdecode of the row's 5 JPEGs (base64 already decoded, untimed)
  + base64     the same from the stored base64 text (pybase64, as lib.data.frames.decode_jpeg)
  TSV → tensor TSVFile.row + frame_columns + load_clip(size_frame=5, the training loader's transform:
               ClipTransform(224, train=True, normalize=False) → uint8 crops; the model normalises them
               on its device, lib.data.frames.normalize_frames)
  + normalise  the same with float32 ImageNet normalisation in the loader (normalize=True), for comparison
  deferred     the same with defer_resize=True (config resize_on device, the default on a GPU): the crop's
               region at the stored resolution, 240x241 here; the model resizes the batch on its device
               (its cost on this CPU is shown as a stage: lib.data.frames.resize_frames on a batch of 8)

Target: TSV → tensor at >= 70 % of the floor's clips/s (a verdict for each loader setting). Rates come from
the thread's CPU time (robust on a shared machine) and from wall-clock time; medians over rounds. The
verdict is the median of per-round ratios (floor and path timed back to back). A per-stage breakdown
follows.

    .venv/bin/python bench/loader.py [--tsv PATH] [--rounds 7] [--clips 200] [--threads 1]
"""

from __future__ import annotations

import argparse
import binascii
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pybase64
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.data.frames import (  # noqa: E402
    ClipTransform,
    decode_jpeg,
    load_clip,
    normalize_clip,
    resize_frames,
)
from lib.data.tsv import TSVFile, frame_columns  # noqa: E402

DEFAULT_TSV = REPO.parent / "shared" / "data" / "msrvtt-sample" / "msrvtt.tsv"
SIZE_FRAME, SIZE_IMG = 5, 224


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
        cpu = models[0] if models else cpu
        meminfo = Path("/proc/meminfo").read_text().splitlines()
        kib = next(int(ln.split()[1]) for ln in meminfo if ln.startswith("MemTotal"))
        memory = f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration):
        memory = "? GiB"
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{platform.machine()} {cpu}, {os.cpu_count()} cores, {memory}, no GPU used; load average {load}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, OpenCV {cv2.__version__}, "
        f"numpy {np.__version__}"
    )


def add_tsv_option(parser: argparse.ArgumentParser) -> None:
    """--tsv: the frame TSV a loader benchmark reads (default: the shared MSR-VTT sample)."""
    parser.add_argument(
        "--tsv", type=Path, default=DEFAULT_TSV, help="frame TSV (default: the shared MSR-VTT sample)"
    )


def tsv_missing(path: Path) -> bool:
    """True, after saying so on stderr, when the frame TSV is not there."""
    missing = not path.is_file()
    if missing:
        print(f"error: {path} not found (pass --tsv)", file=sys.stderr)
    return missing


def timed(fn: Callable[[int], object], n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for fn(0..n-1)."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for i in range(n):
        fn(i)
    return time.thread_time() - cpu, time.perf_counter() - wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_tsv_option(parser)
    parser.add_argument("--rounds", type=int, default=7, help="alternating measurement rounds")
    parser.add_argument("--clips", type=int, default=200, help="clips per path per round")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenCV threads (DataLoader: 1)")
    args = parser.parse_args(argv)
    if tsv_missing(args.tsv):
        return 2
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)

    tsv = TSVFile(args.tsv)
    n_rows = len(tsv)
    b64_rows = [frame_columns(tsv.row(i)) for i in range(n_rows)]
    jpeg_rows = [[pybase64.b64decode(f, validate=True) for f in row] for row in b64_rows]
    if any(len(row) != SIZE_FRAME for row in jpeg_rows):
        print(f"error: every row of {args.tsv} must hold {SIZE_FRAME} frames", file=sys.stderr)
        return 2
    transform = ClipTransform(SIZE_IMG, train=True, normalize=False)  # what lib.tasks' loaders use
    float_transform = ClipTransform(SIZE_IMG, train=True)
    deferred_transform = ClipTransform(SIZE_IMG, train=True, normalize=False, defer_resize=True)
    rng = random.Random(0)
    decoded_rows = [[decode_jpeg(f) for f in row] for row in b64_rows]
    clip_u8 = np.zeros((SIZE_FRAME, SIZE_IMG, SIZE_IMG, 3), np.uint8)

    def floor(i: int) -> None:
        for jpeg in jpeg_rows[i % n_rows]:
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)

    def floor_with_base64(i: int) -> None:
        for b64 in b64_rows[i % n_rows]:
            jpeg = pybase64.b64decode(b64, validate=True)
            cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR_RGB)

    def tsv_to_tensor(i: int) -> torch.Tensor:
        return load_clip(frame_columns(tsv.row(i % n_rows)), SIZE_FRAME, transform, True, rng)

    def tsv_to_float_tensor(i: int) -> torch.Tensor:
        return load_clip(frame_columns(tsv.row(i % n_rows)), SIZE_FRAME, float_transform, True, rng)

    def tsv_to_deferred_tensor(i: int) -> torch.Tensor:
        return load_clip(frame_columns(tsv.row(i % n_rows)), SIZE_FRAME, deferred_transform, True, rng)

    batch = torch.stack([tsv_to_deferred_tensor(i) for i in range(8)])

    def device_resize(i: int) -> None:  # per clip: one batch of 8 every 8th call
        if i % 8 == 0:
            resize_frames(batch, SIZE_IMG)

    stages: dict[str, Callable[[int], object]] = {
        "read row (TSVFile.row + frame_columns)": lambda i: frame_columns(tsv.row(i % n_rows)),
        "base64 → JPEG bytes (5 frames, pybase64)": lambda i: [
            pybase64.b64decode(f, validate=True) for f in b64_rows[i % n_rows]
        ],
        "  the same with the standard library's binascii": lambda i: [
            binascii.a2b_base64(f, strict_mode=True) for f in b64_rows[i % n_rows]
        ],
        "JPEG decode (5 frames) = floor": floor,
        "resize + crop (5 frames, uint8)": lambda i: transform(decoded_rows[i % n_rows], rng),
        "resize + crop + normalise (float32)": lambda i: float_transform(decoded_rows[i % n_rows], rng),
        "  of which normalise (one LUT pass)": lambda i: normalize_clip(clip_u8),
        "resize of the deferred crops by the model (torch on this CPU, batches of 8)": device_resize,
    }

    paths = {
        "floor": floor,
        "floor+b64": floor_with_base64,
        "tensor": tsv_to_tensor,
        "float": tsv_to_float_tensor,
        "deferred": tsv_to_deferred_tensor,
    }
    for fn in (*paths.values(), *stages.values()):  # warm-up
        timed(fn, 20)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    stage_cpu: dict[str, list[float]] = {name: [] for name in stages}
    for _ in range(args.rounds):
        for name, fn in paths.items():
            runs[name].append(timed(fn, args.clips))
        for name, fn in stages.items():
            stage_cpu[name].append(timed(fn, args.clips)[0])
    check = tsv_to_tensor(0)
    assert check.shape == (SIZE_FRAME, 3, SIZE_IMG, SIZE_IMG) and check.dtype == torch.uint8
    assert tsv_to_float_tensor(0).dtype == torch.float32
    assert tsv_to_deferred_tensor(0).shape == (SIZE_FRAME, 3, 240, 241)  # the 320x240 frames' crop region

    def rate(name: str, which: int) -> float:
        return args.clips / statistics.median(r[which] for r in runs[name])

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine_line()}")
    print(
        f"setup:   {n_rows} rows of {args.tsv.name} repeated, {SIZE_FRAME} frames/clip -> "
        f"{SIZE_IMG}px train transform ({transform.mode}); threads={args.threads}; "
        f"{args.rounds} rounds x {args.clips} clips per path; medians\n"
    )
    print("| path | clips/s (CPU time) | clips/s (wall) | ms/clip (CPU) | vs floor (CPU) | vs floor (wall) |")
    print("|---|---:|---:|---:|---:|---:|")
    labels = {
        "floor": "bare JPEG decode (floor)",
        "floor+b64": "base64 + JPEG decode",
        "tensor": "TSV -> tensor (load_clip, uint8: the training loader)",
        "float": "TSV -> tensor with float normalisation in the loader",
        "deferred": "TSV -> stored-resolution crop (resize_on device: the model resizes)",
    }
    for name, label in labels.items():
        cpu, wall = rate(name, 0), rate(name, 1)
        print(
            f"| {label} | {cpu:.0f} | {wall:.0f} | {1e3 / cpu:.3f} | "
            f"{cpu / rate('floor', 0):.0%} | {wall / rate('floor', 1):.0%} |"
        )
    print("\n| stage (measured alone) | ms/clip (CPU) |")
    print("|---|---:|")
    for name, times in stage_cpu.items():
        print(f"| {name} | {statistics.median(times) / args.clips * 1e3:.3f} |")
    # Each round times the floor and the path back to back; the median of the per-round ratios is less
    # sensitive to drift in the machine's speed over the run than a ratio of medians.
    for name, setting in (
        ("tensor", "resize_on worker (CPU default)"),
        ("deferred", "resize_on device (GPU default)"),
    ):
        per_round = [f[0] / t[0] for f, t in zip(runs["floor"], runs[name], strict=True)]
        print(
            f"\nTSV -> tensor, {setting}: {statistics.median(per_round):.0%} of the decode floor (median of "
            f"per-round ratios; range {min(per_round):.0%}-{max(per_round):.0%}; target >= 70%)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
