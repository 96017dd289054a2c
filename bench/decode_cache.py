"""Caption decoding speed: the key/value cache of the text prefix against re-running the whole prefix at every
step (``lib.tasks.decode``, ``cache=True`` / ``cache=False``), same model, same videos, same run.

    python bench/decode_cache.py [--hidden 384 --layers 6 --heads 12] [--videos 12] [--lengths 20 60 120]

A random model of the demo's fusion size (MiniLM: 384 wide, 6 layers) over 12 videos of random video
tokens (4 frames of 1 + 7x7 tokens, as the Swin gives them, plus the task token); its [SEP] is never
chosen, so every caption is exactly ``length`` tokens long. Greedy and beam search (3 beams) at each
length; tokens/s counts the caption tokens returned (videos x length); each path runs ``--rounds`` times,
alternating, and the fastest is kept. One torch thread by default: on a 2-core machine shared with other
jobs, two threads spin against each other and the timings mean nothing. Also checks that both paths
return the same token ids.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.model.config import LavenderConfig  # noqa: E402
from lib.model.lavender import LavenderModel  # noqa: E402
from lib.tasks.decode import generate  # noqa: E402


class Specials:
    """The four special ids decoding needs (bert-base-uncased's)."""

    cls_token_id, sep_token_id, pad_token_id, mask_token_id = 101, 102, 0, 103


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument(
        "--videos", type=int, default=12, help="a caption evaluation batch (README: --size_batch 12)"
    )
    p.add_argument("--video_tokens", type=int, default=4 * 50)
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 60, 120])
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    torch.manual_seed(0)
    config = LavenderConfig(
        swin_size="tiny",
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=args.heads,
        intermediate_size=4 * args.hidden,
        enable_task_token=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    model = LavenderModel(config).eval()
    head = model.fc_mtm.predictions
    head.decoder.weight[Specials.sep_token_id] = 0.0
    head.bias[Specials.sep_token_id] = -1e4  # never ends: every caption is `length` tokens
    feat = torch.randn(args.videos, args.video_tokens, args.hidden)
    mask = torch.ones(args.videos, args.video_tokens, dtype=torch.bool)
    tok = Specials()

    print(
        f"machine: {cpu_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"model: fusion {args.hidden} wide, {args.layers} layers, {args.heads} heads; "
        f"{args.videos} videos of {args.video_tokens} tokens (+ task token)\n"
    )
    print("| search | tokens | recompute tok/s | cache tok/s | speed-up | same ids |")
    print("|---|---:|---:|---:|---:|---|")
    for beams in args.beams:
        for length in args.lengths:
            best = {True: float("inf"), False: float("inf")}
            found = {}
            for _ in range(args.rounds):
                for cache in (False, True):
                    start = time.perf_counter()
                    captions = generate(
                        model, tok, feat, mask, beams, length, size_txt=length + 1, cache=cache
                    )
                    best[cache] = min(best[cache], time.perf_counter() - start)
                    found[cache] = [c.ids for c in captions]
            n = sum(len(ids) for ids in found[True])
            assert n == args.videos * length
            name = "greedy" if beams == 1 else f"beam {beams}"
            slow, fast = n / best[False], n / best[True]
            print(
                f"| {name} | {length} | {slow:.1f} | {fast:.1f} | {fast / slow:.1f}x | "
                f"{'yes' if found[True] == found[False] else 'NO'} |",
                flush=True,
            )
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
