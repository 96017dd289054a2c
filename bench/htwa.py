"""HTWA vs full temporal windows: Video Swin training step (forward + backward) time and peak memory, CPU.

Same backbone, same input, three temporal layouts (spatial window 4 x 4, spatial shifts in alternate blocks):

* ``full``: one temporal window over all T frames in every stage (every token attends to every frame of its
  spatial window; the temporal shift vanishes) — the baseline;
* ``htwa``: LF-VILA's hierarchy, temporal windows [2, 4, 8, 16] by stage, no temporal shift;
* ``lavender``: LAVENDER's window of 8 frames in every stage, shifted by 4 in alternate blocks (context).

Swin-T widths (96, depths 2-2-6-2, heads 3-6-12-24), 64 x 64 px frames, batch 1, fp32, 32 and 64 frames.
Each configuration runs in a fresh subprocess: "peak RSS" is that process's high-water mark (``VmHWM``; not
``ru_maxrss``, which keeps the parent's mark across fork + exec) and "step peak" that mark minus the RSS
after building the model (activations, attention scores, gradients). Times are the best of ``--iters``
steps after one warm-up, on one thread by default: on shared cores, CPU time of one thread moves far less
than wall time (and than the CPU time of several threads, which spin waiting for each other), so the ratios
use it.

    python bench/htwa.py                    # about 3 minutes
    python bench/htwa.py --frames 32 --iters 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

LAYOUTS = ("full", "htwa", "lavender")
SWIN_T = {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (3, 6, 12, 24), "drop_path_rate": 0.0}


def rss_gib(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or its high-water mark since exec (VmHWM), GiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 2**20


def measure(layout: str, frames: int, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from lib.model.video_swin import SwinTransformer3D

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    windows = {"full": {"window_size": (frames, 4, 4)},
               "htwa": {"window_size": (8, 4, 4), "temporal_windows": [2, 4, 8, 16], "local_window": 8},
               "lavender": {"window_size": (8, 4, 4)}}  # fmt: skip
    model = SwinTransformer3D(**SWIN_T, **windows[layout]).train()
    x = torch.randn(1, 3, frames, args.size, args.size)
    before = rss_gib()

    def step() -> None:
        model(x).square().mean().backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up
    walls, cpus = [], []
    for _ in range(args.iters):
        wall, cpu = time.perf_counter(), time.process_time()
        step()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    peak = rss_gib("VmHWM")
    return {"wall_s": min(walls), "cpu_s": min(cpus), "peak_rss_gib": peak, "step_peak_gib": peak - before}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--layouts", nargs="+", default=list(LAYOUTS), choices=LAYOUTS)
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels (a multiple of 32)")
    parser.add_argument("--iters", type=int, default=2, help="timed steps after one warm-up")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is steadiest)")
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args)))
        return

    from model import machine  # bench/model.py's machine line

    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}; load average at start {os.getloadavg()[0]:.1f}")
    setting = f"Swin-T widths, {args.size} px, batch 1, fp32, spatial window 4x4, {args.threads} thread(s)"
    print(f"setting: {setting}, best of {args.iters}")
    header = ("frames", "layout", "temporal windows", "CPU s", "vs full", "wall s", "peak RSS GiB")
    header += ("step peak GiB",)
    widths = (6, 8, 16, 6, 7, 6, 12, 13)
    print("  ".join(f"{c:>{w}}" for c, w in zip(header, widths)))
    for frames in args.frames:
        results = {}
        for layout in args.layouts:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", layout, str(frames)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{layout} {frames}: failed\n{done.stderr[-2000:]}")
                continue
            results[layout] = r = json.loads(done.stdout.strip().splitlines()[-1])
            full = results.get("full")
            names = {"full": f"{frames} (all)", "htwa": "2/4/8/16", "lavender": "8, shifted 4"}
            cells = (frames, layout, names[layout], f"{r['cpu_s']:.2f}",
                     f"{full['cpu_s'] / r['cpu_s']:.2f}x" if full else "-", f"{r['wall_s']:.2f}",
                     f"{r['peak_rss_gib']:.2f}", f"{r['step_peak_gib']:.2f}")  # fmt: skip
            print("  ".join(f"{c:>{w}}" for c, w in zip(cells, widths)), flush=True)
    print(f"load average at end {os.getloadavg()[0]:.1f} (the 2 cores may be shared with other jobs)")


if __name__ == "__main__":
    main()
