"""ALPRO's entity prompts (task ``pem``) on demo data: how right the prompter's region pseudo-labels are, and
the PEM loss in a multi-task run.

    python bench/entity_prompts.py [--data _datasets/demo] [--out _snapshot/pem] [--vtc_steps 600]
                                   [--pem_steps 300] [--regions 8]

1. The prompter: the demo model's dual-encoder path (``contrastive_dim 256``, mean-pooled text), started from
   the demo's attribute-pretrained Video Swin, trained with the ``vtc`` task alone on the train split.
2. Its pseudo-labels on the held-out test clips: ``--regions`` regions per clip drawn by the task's own
   sampler (30-50 % of the token grid), each cropped and scored against the prompt bank of the caption
   entities (:class:`lib.tasks.entity_prompts.EntityPromptTask`, the same code PEM trains with). A region
   counts when an object of the clip stays inside it at every sampled frame (from the generator's recorded
   positions); its truth is the scene's colour and shape word. Reported: the arg-max over the colour
   entities (chance 1/6), over the shape entities (chance 1/4), and over every entity being the object's
   colour or shape word.
3. The PEM loss: the demo's multi-task config plus a ``pem`` stream with that prompter, ``--pem_steps`` steps;
   the PEM stream's soft cross-entropy above its floor (``kl``) and its agreement with the prompter, averaged
   over each fifth of the run (log.jsonl).

Writes ``OUT/entity_prompts.json``. Re-running reuses the prompter and the multi-task run when they exist.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.datasets import stack_clips  # noqa: E402
from lib.demo.backbone import pretrain_video_swin  # noqa: E402
from lib.demo.synthetic import COLORS, PLURALS, SHAPES, make_demo_dataset  # noqa: E402
from lib.engine.config import load_config  # noqa: E402
from lib.engine.logging import read_jsonl  # noqa: E402
from lib.tasks.common import clip_dataset, eval_batches, load_tokenizer  # noqa: E402
from lib.tasks.entity_prompts import EntityPromptTask, sample_region  # noqa: E402
from lib.tasks.run import run  # noqa: E402

CONFIG = "_args/args_demo_multi-task.json"
DUAL = ["--contrastive_dim", "256", "--contrastive_text_pool", "mean"]


def base_argv(data: Path, out: Path) -> list[str]:
    return ["--config", CONFIG, "--data_dir", str(data), "--path_output", str(out), "--tensorboard", "false"]


def train_prompter(data: Path, out: Path, swin: Path, steps: int) -> Path:
    """The vtc task alone from the attribute-pretrained Swin; its model folder."""
    run_dir = out / "prompter"
    if not (run_dir / "model").is_dir():
        argv = base_argv(data, run_dir) + DUAL + [
            "--type", "vtc", "--task", "demo-retrieval", "--datasets", "[]", "--size_batch", "16",
            "--size_epoch", "1", "--steps_per_epoch", str(steps),
            "--vis_backbone_init", "3d", "--vis_backbone_ckpt", str(swin),
        ]  # fmt: skip
        run("vtc", argv)
    return run_dir / "model"


def inside(spec: dict, box: tuple[float, float, float, float], n_frames: int) -> bool:
    """Whether an object of the video stays inside the pixel box (y0, y1, x0, x1) at every sampled frame."""
    y0, y1, x0, x1 = box
    times = np.linspace(0, spec["n_frames"] - 1, n_frames)
    step = np.asarray(spec["step"])
    for centre in np.asarray(spec["centres"]):
        path = centre[None] + times[:, None] * step[None]
        if ((path[:, 0] >= x0) & (path[:, 0] < x1) & (path[:, 1] >= y0) & (path[:, 1] < y1)).all():
            return True
    return False


def pseudo_label_accuracy(data: Path, out: Path, prompter: Path, n_regions: int, seed: int = 0) -> dict:
    cfg = load_config(
        base_argv(data, out / "eval") + DUAL + [
            "--type", "pem", "--task", "demo-retrieval", "--datasets", "[]", "--pem_prompter", str(prompter),
        ]
    )  # fmt: skip
    task = EntityPromptTask(cfg, load_tokenizer(cfg.txt_backbone))
    specs = json.loads((data / "meta_demo.json").read_text())["videos"]
    entities = task.entities
    colours = [e for e in entities if e in COLORS]
    shapes = [e for e in entities if e in SHAPES]
    model, _ = task.prompter(torch.device("cpu"))
    rng = random.Random(seed)
    dataset = clip_dataset(cfg, task.store, task.ann["test"], train=False, videos_only=True)
    counts = {"regions": 0, "with_object": 0, "colour": 0, "shape": 0, "any": 0}
    for batch in eval_batches(dataset, 16, lambda b: b):
        clips = stack_clips(batch)
        _, _, grid = task.grid_of(model, clips)
        height, width = clips.shape[-2:]
        for _ in range(n_regions):
            regions = [sample_region(grid, grid, cfg.pem_region, rng) for _ in batch]
            boxes = [
                (t * height / grid, (t + h) * height / grid, s * width / grid, (s + w) * width / grid)
                for t, s, h, w in regions
            ]
            keep = [inside(specs[item["id"]], box, clips.shape[1]) for item, box in zip(batch, boxes)]
            counts["regions"] += len(batch)
            if not any(keep):
                continue
            probs = task.pseudo_labels(clips, regions, grid)
            for item, p, k in zip(batch, probs, keep):
                if not k:
                    continue
                scene = specs[item["id"]]["scene"]
                truth = {scene["color"], scene["shape"], PLURALS[scene["shape"]]}
                counts["with_object"] += 1
                counts["colour"] += (
                    colours[int(p[[entities.index(c) for c in colours]].argmax())] == scene["color"]
                )
                counts["shape"] += (
                    shapes[int(p[[entities.index(s) for s in shapes]].argmax())] == scene["shape"]
                )
                counts["any"] += entities[int(p.argmax())] in truth
    n = max(1, counts["with_object"])
    in_bank = sum(e in {*COLORS, *SHAPES, *PLURALS.values()} for e in entities)
    return {
        "entities": entities,
        "regions": counts["regions"],
        "regions_with_object": counts["with_object"],
        "colour_acc": counts["colour"] / n,
        "colour_chance": 1 / max(1, len(colours)),
        "shape_acc": counts["shape"] / n,
        "shape_chance": 1 / max(1, len(shapes)),
        "top1_colour_or_shape": counts["any"] / n,
        # a uniform guess over the bank hits the colour, the shape or its plural: 3 of the entities
        "top1_chance": 3 / len(entities) if in_bank else 0.0,
    }


def pem_run(data: Path, out: Path, prompter: Path, swin: Path, steps: int) -> list[dict]:
    """The demo multi-task config + a pem stream; the pem stream's loss over the run (fifths)."""
    run_dir = out / "multi_task_pem"
    if not (run_dir / "metrics.json").is_file():
        datasets = json.loads(Path(CONFIG).read_text())["datasets"]
        datasets.append({"type": "pem", "task": "demo-retrieval", "task_weight": 1.0})
        argv = base_argv(data, run_dir) + DUAL + [
            "--vtc_weight", "1", "--vtm_negatives_from", "vtc", "--pem_prompter", str(prompter),
            "--datasets", json.dumps(datasets), "--size_epoch", "2", "--steps_per_epoch", str(steps // 2),
            "--vis_backbone_init", "3d", "--vis_backbone_ckpt", str(swin),
        ]  # fmt: skip
        run("multi-task", argv)
    name = "pem_demo-retrieval"
    records = [r for r in read_jsonl(run_dir / "log.jsonl", "train") if f"loss/{name}" in r]
    if not records:
        raise SystemExit(f"no {name} records in {run_dir / 'log.jsonl'}")
    fifths = [i for i in np.array_split(np.arange(len(records)), 5) if len(i)]
    return [
        {
            "steps": f"{records[i[0]]['step']}-{records[i[-1]]['step']}",
            "loss": float(np.mean([records[j][f"loss/{name}"] for j in i])),
            "kl": float(np.mean([records[j][f"{name}/kl"] for j in i])),
            "agreement": float(np.mean([records[j][f"{name}/acc"] for j in i])),
        }
        for i in fifths
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="_datasets/demo")
    p.add_argument("--out", default="_snapshot/pem")
    p.add_argument("--vtc_steps", type=int, default=600)
    p.add_argument("--pem_steps", type=int, default=300)
    p.add_argument("--regions", type=int, default=8, help="regions drawn per test clip")
    args = p.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make_demo_dataset(data, seed=0, n_train=1200, n_val=30, n_test=60, workers=2)
    cfg = load_config(base_argv(data, out / "backbone"))
    swin = pretrain_video_swin(cfg, data, out / "backbone", steps=600, seed=0)
    prompter = train_prompter(data, out, swin, args.vtc_steps)
    acc = pseudo_label_accuracy(data, out, prompter, args.regions)
    print(
        f"\nprompter pseudo-labels on held-out test regions with an object ({acc['regions_with_object']} of "
        f"{acc['regions']} regions; entities: {len(acc['entities'])} caption words)"
    )
    print("| arg-max over | accuracy | chance |\n|---|---:|---:|")
    print(f"| colour entities | {acc['colour_acc']:.3f} | {acc['colour_chance']:.3f} |")
    print(f"| shape entities | {acc['shape_acc']:.3f} | {acc['shape_chance']:.3f} |")
    top1, chance = acc["top1_colour_or_shape"], acc["top1_chance"]
    print(f"| every entity (= colour or shape word) | {top1:.3f} | {chance:.3f} |")
    curve = pem_run(data, out, prompter, swin, args.pem_steps)
    print("\nPEM stream in the multi-task run (means over each fifth of its logged steps)")
    print("| steps | soft CE | above its floor (KL) | agreement with the prompter |\n|---|---:|---:|---:|")
    for row in curve:
        print(f"| {row['steps']} | {row['loss']:.3f} | {row['kl']:.3f} | {row['agreement']:.3f} |")
    summary = {"pseudo_labels": acc, "pem_curve": curve, "command": " ".join(sys.argv)}
    (out / "entity_prompts.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
