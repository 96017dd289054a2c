"""Demo recipes side by side: several variants of the demo's multi-task run at once, one table of their
validation curves and test numbers.

Each recipe is the demo config (`_args/args_demo_multi-task.json`) plus overrides (length, task mix, Video
Swin geometry, attention) and runs `main_multi_task_mlm.py` in its own process, in fp32. On a GPU many fit
at once (`--parallel 9` ran all of them in about 4 minutes on one H200); on a 2-core CPU run one at a time.
How a recipe's length translates into CPU minutes: `bench/demo_step.py` (ms per step on this machine).

    .venv/bin/python -m lib.demo.diagnostics.recipes --recipes S_600,S_1200 [--parallel 2] \\
        [--out /tmp/recipes] [--data _datasets/demo_recipes]   (built with 60 val videos if missing)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lib.demo.diagnostics import command_line

REPO = Path(__file__).resolve().parents[3]


def ret(b: int = 8, neg: int = 3, w: float = 1.0) -> dict:
    return {"type": "retrieval", "task": "demo-retrieval", "size_batch": b, "vtm_negatives": neg,
            "task_weight": w}  # fmt: skip


def qa(b: int = 8, k: int = 5, w: float = 3.0) -> dict:
    return {"type": "qaoe", "task": "demo-qa", "size_batch": b, "items_per_video": k, "task_weight": w}


def mc(b: int = 8, w: float = 1.0) -> dict:
    return {"type": "qamc", "task": "demo-mc", "mc_style": "sequence", "size_txt": 60, "size_batch": b,
            "task_weight": w}  # fmt: skip


def retmc(b: int = 8, w: float = 1.0) -> dict:
    return {"type": "qamc", "task": "demo-retmc", "mc_style": "retrieval", "size_batch": b, "task_weight": w}


def cap(b: int = 16, p: float = 0.5, w: float = 2.0) -> dict:
    return {"type": "captioning", "task": "demo-captioning", "attn_mask_type": "seq2seq",
            "max_gen_length": 12, "p_mask": p, "size_batch": b, "task_weight": w}  # fmt: skip


BALANCED = [ret(), qa(), mc(), retmc(), cap()]
CAPTION_HEAVY = [ret(), qa(w=1.0), mc(), retmc(), cap(p=0.6, w=4.0)]


def recipe(datasets: list[dict], steps: int, *extra: str) -> list[str]:
    return ["--datasets", json.dumps(datasets), "--size_epoch", "4", "--steps_per_epoch", str(steps // 4),
            *extra]  # fmt: skip


RECIPES: dict[str, list[str]] = {
    **{f"S_{n}": recipe(BALANCED, n) for n in (600, 1200, 2400, 4800)},
    "V_d11_1200": recipe(BALANCED, 1200, "--vis_depths", "[1,1]"),
    "V_capheavy_1200": recipe(CAPTION_HEAVY, 1200),
    "V_full_1200": recipe(BALANCED, 1200, "--video_attends_text", "true"),
    "V_lr4_1200": recipe(BALANCED, 1200, "--lr", "4e-4"),
    "V_p4old_2400": recipe(BALANCED, 2400, "--vis_patch_size", "[2,4,4]", "--vis_embed_dim", "32",
                           "--vis_stem_convs", "0", "--vis_depths", "[1,2,1]", "--vis_heads", "[2,4,8]"),
}  # fmt: skip

COLUMNS = (
    ("R@1", "retrieval_demo-retrieval/{}/t2v_R1"),
    ("R@5", "retrieval_demo-retrieval/{}/t2v_R5"),
    ("QA", "qaoe_demo-qa/{}/acc"),
    ("color", "qaoe_demo-qa/{}/acc_type/color"),
    ("count", "qaoe_demo-qa/{}/acc_type/count"),
    ("size", "qaoe_demo-qa/{}/acc_type/size"),
    ("dir", "qaoe_demo-qa/{}/acc_type/direction"),
    ("shape", "qaoe_demo-qa/{}/acc_type/shape"),
    ("MC seq", "qamc_demo-mc/{}/acc"),
    ("MC ret", "qamc_demo-retmc/{}/acc"),
    ("CIDEr", "captioning_demo-captioning/{}/CIDEr"),
)


def table(runs: dict[str, Path]) -> str:
    """Markdown: every validation pass and the test numbers of each run (accuracies and recalls in %)."""
    lines = ["| recipe | step | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---|---:|" + "---:|" * len(COLUMNS)]  # fmt: skip
    for name, out in runs.items():
        log = out / "log.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        rows = [(str(r["step"]), r, "val") for r in records if r.get("kind") == "eval"]
        rows += [("test", r, "test") for r in records if r.get("kind") == "final"]
        for step, rec, split in rows:
            cells = [f"{rec[key.format(split)]:.{2 if c == 'CIDEr' else 1}f}" if key.format(split) in rec
                     else "–" for c, key in COLUMNS]  # fmt: skip
            lines.append(f"| {name} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default="S_600", help=f"comma-separated names or 'all': {', '.join(RECIPES)}")
    p.add_argument("--parallel", type=int, default=1, help="runs at once")
    p.add_argument("--out", type=Path, default=Path("/tmp/demo_recipes"))
    p.add_argument("--data", type=Path, default=REPO / "_datasets" / "demo_recipes")
    args = p.parse_args(argv)
    names = list(RECIPES) if args.recipes == "all" else args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    from lib.demo.synthetic import make_demo_dataset

    make_demo_dataset(args.data, seed=0, n_train=1200, n_val=60, n_test=60, workers=2)
    base = ["--config", "_args/args_demo_multi-task.json", "--data_dir", str(args.data),
            "--precision", "fp32", "--tensorboard", "false", "--n_workers", "1"]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1") if args.parallel > 1 else dict(os.environ)
    runs = {name: args.out / name for name in names}
    waiting, running = list(names), {}
    started = time.perf_counter()
    while waiting or running:
        while waiting and len(running) < args.parallel:
            name = waiting.pop(0)
            runs[name].mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "main_multi_task_mlm.py", *base, "--path_output", str(runs[name]),
                   *RECIPES[name]]  # fmt: skip
            log = open(runs[name] / "console.txt", "w")  # noqa: SIM115 - closed with the process below
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            running[name] = (proc, log)
        time.sleep(2)
        for name, (proc, log) in list(running.items()):
            if proc.poll() is not None:
                log.close()
                del running[name]
                status = "done" if proc.returncode == 0 else f"FAILED ({runs[name] / 'console.txt'})"
                print(f"{name}: {status} after {time.perf_counter() - started:.0f} s", flush=True)
    print(f"\ncommand: {command_line(__spec__.name)}\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
