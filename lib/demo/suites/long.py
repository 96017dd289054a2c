"""The long-form demo suite (issue #27): tasks that need time order, the long-form path against LAVENDER's
5-frame short-clip model on the same videos.

    python -m lib.demo.suites.long                 # data, both models, the report (_snapshot/demo_long)
    python -m lib.demo.suites.long --steps 300     # a shorter run

**Data.** Each video is 4 consecutive segments of 8 frames (32 x 32 px, 8 fps, 4 s), each segment its own
event: one of 6 objects (a colour and a shape) crossing the frame over a textured background. Its
paragraph says the events in order ("a red circle appears. a blue square appears. ..."). The test split
is made of groups: the same 4 events in 4 different orders, so every paragraph's hardest distractors are
the same events in another order (an order-blind model ranks within its group by chance: R@1 ~ 1/4).
Questions: "what happens after / before the red circle?", the options being the video's 3 other events
(chance 1/3). Annotations are written as the public releases lay them: ActivityNet Captions' folder for
paragraph retrieval, ``qa_choice`` rows for the questions; the short-clip model reads the same texts as
``retrieval`` / ``qa_choice`` files. Frames go through the long-video extractor (32 frames with times).

**Models** (one config each, both trained with ``main_multi_task_mlm``'s code, the same Swin and fusion
sizes, steps and learning rate):

* long-form: 4 clips x 4 frames over the whole video, the HTWA Swin (temporal windows 4, 8, 16; the local
  tap = one clip), ``paragraph-retrieval`` (stage 0: global InfoNCE + MTC + the matching [MASK]) and
  ``long-qa``;
* short-clip (LAVENDER as the main demo runs it): 5 frames spread over the video, the plain Video Swin,
  ``retrieval`` (contrastive + matching) and ``qamc`` (one sequence).

Targets on the test split: paragraph R@1 >= 0.5 with order-swapped distractors and order questions >= 0.85
for the long-form model; the short-clip model's numbers are reported beside them with the chance levels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lib.data.annotations import write_json_atomic
from lib.data.long_video import extract_long_videos
from lib.data.video_write import write_video
from lib.demo.synthetic import COLORS, _background, _draw

EVENTS: tuple[tuple[str, str], ...] = (
    ("red", "circle"),
    ("blue", "square"),
    ("green", "triangle"),
    ("yellow", "cross"),
    ("white", "circle"),
    ("purple", "square"),
)
SEGMENTS, SEGMENT_FRAMES, FPS, SIZE = 4, 8, 8, 32
DATASET = "demolong"
PARAGRAPH_TASK, QA_TASK = "demolong-para", "demolong-qa"
SHORT_RETRIEVAL_TASK, SHORT_QA_TASK = "demolong-ret", "demolong-mc"
TARGETS = {"paragraph_r1": 0.5, "order_qa": 0.85}
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}


def event_name(event: int) -> str:
    color, shape = EVENTS[event]
    return f"{color} {shape}"


def sentence(event: int) -> str:
    return f"a {event_name(event)} appears"


def render(order: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """The frames of one video: each segment's object crosses the frame (a random side and height)."""
    background = _background(SIZE, int(rng.integers(2**31)))
    frames = []
    for event in order:
        color, shape = EVENTS[event]
        radius = 0.2 * SIZE
        y = rng.uniform(0.35, 0.65) * SIZE
        start, end = (0.25 * SIZE, 0.75 * SIZE) if rng.random() < 0.5 else (0.75 * SIZE, 0.25 * SIZE)
        for t in range(SEGMENT_FRAMES):
            frame = background.copy()
            x = start + (end - start) * t / (SEGMENT_FRAMES - 1)
            _draw(frame, shape, np.array([x, y]), radius, COLORS[color])
            frames.append(frame)
    return frames


def sample_orders(seed: int, n_train: int, n_groups: int, n_orders: int) -> dict[str, list[tuple[int, ...]]]:
    """Event orders per split: train random; val / test groups of ``n_orders`` orders of one event set."""
    rng = np.random.default_rng([seed, 27])
    train = [tuple(int(e) for e in rng.permutation(len(EVENTS))[:SEGMENTS]) for _ in range(n_train)]

    def groups(n: int) -> list[tuple[int, ...]]:
        out = []
        for _ in range(n):
            events = rng.permutation(len(EVENTS))[:SEGMENTS]
            perms = list(itertools.permutations(events))
            picked = rng.choice(len(perms), size=n_orders, replace=False)
            out += [tuple(int(e) for e in perms[int(i)]) for i in picked]
        return out

    return {"train": train, "val": groups(max(1, n_groups // 4)), "test": groups(n_groups)}


def questions(video: str, order: tuple[int, ...], rng: np.random.Generator) -> list[dict[str, Any]]:
    """Every "after" and "before" question of a video, options = its other 3 events in random order."""
    out = []
    for k, event in enumerate(order):
        for word, other in (("after", k + 1), ("before", k - 1)):
            if not 0 <= other < SEGMENTS:
                continue
            options = [e for e in order if e != event]
            rng.shuffle(options)
            item = {"video": video, "question": f"what happens {word} the {event_name(event)}?"}
            item.update({f"option_{i}": event_name(e) for i, e in enumerate(options)})
            out.append({**item, "answer": options.index(order[other])})
    return out


def build_data(folder: Path, seed: int, n_train: int, n_groups: int, n_orders: int) -> dict[str, Any]:
    """Videos, their long-video rows (``img_demolong.tsv``) and every annotation file; returns a summary.
    Reuses a complete folder of the same settings."""
    settings = {"seed": seed, "n_train": n_train, "n_groups": n_groups, "n_orders": n_orders, "recipe": 1}
    summary_path = folder / "summary.json"
    if summary_path.is_file() and json.loads(summary_path.read_text()).get("settings") == settings:
        return json.loads(summary_path.read_text())
    orders = sample_orders(seed, n_train, n_groups, n_orders)
    videos = folder / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    for split, split_orders in orders.items():
        ids[split] = []
        for i, order in enumerate(split_orders):
            vid = f"{DATASET}_{split}_{i:04d}"
            frames = render(order, np.random.default_rng([seed, SPLIT_STREAMS[split], i]))
            write_video(
                videos / f"{vid}.mp4", frames, fps=FPS, options={"preset": "ultrafast", "threads": "1"}
            )
            ids[split].append(vid)
    extract_long_videos(videos, SEGMENTS * SEGMENT_FRAMES, folder / f"img_{DATASET}", progress=False)
    duration = SEGMENTS * SEGMENT_FRAMES / FPS
    spans = [[k * duration / SEGMENTS, (k + 1) * duration / SEGMENTS] for k in range(SEGMENTS)]
    anet = (
        folder / PARAGRAPH_TASK
    )  # ActivityNet Captions' layout: train.json, val_1.json (val), val_2.json (test)
    anet.mkdir(exist_ok=True)
    for split, name in (("train", "train.json"), ("val", "val_1.json"), ("test", "val_2.json")):
        entries = {
            vid: {"duration": duration, "timestamps": spans, "sentences": [sentence(e) for e in order]}
            for vid, order in zip(ids[split], orders[split])
        }
        write_json_atomic(anet / name, entries)
    rng = np.random.default_rng([seed, 28])
    qa = {s: [q for v, o in zip(ids[s], orders[s]) for q in questions(v, o, rng)] for s in orders}
    write_json_atomic(folder / f"txt_{QA_TASK}.json", qa)
    write_json_atomic(folder / f"txt_{SHORT_QA_TASK}.json", qa)
    captions = {
        s: [{"video": v, "caption": [sentence(e) for e in o]} for v, o in zip(ids[s], orders[s])]
        for s in orders
    }
    write_json_atomic(folder / f"txt_{SHORT_RETRIEVAL_TASK}.json", captions)
    summary = {
        "settings": settings,
        "videos": {s: len(v) for s, v in ids.items()},
        "questions": {s: len(q) for s, q in qa.items()},
    }
    write_json_atomic(summary_path, summary, indent=1)
    return summary


def common_argv(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """What both models share: the data, the text side (a random 64-wide fusion encoder, MiniLM's vocabulary),
    the Swin's size, the optimisation."""
    return [
        "--type", "multi-task", "--task", "demolong", "--dataset", DATASET, "--data_dir", str(data),
        "--txt_backbone", "all-MiniLM-L6-v2", "--fusion_encoder", "all-MiniLM-L6-v2",
        "--fusion_encoder_rand_init", "true", "--fusion_hidden_size", "64", "--fusion_heads", "4",
        "--fusion_intermediate_size", "128", "--fusion_layers", "4",
        "--fusion_dropout", "0", "--video_attends_text", "false",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "32", "--vis_depths", "[1, 1, 1]",
        "--vis_heads", "[2, 4, 8]", "--vis_backbone_init", "random", "--kinetics", "-1",
        "--vis_drop_path", "0",
        "--size_img", str(SIZE), "--max_size_patch", "2", "--size_batch", "8",
        "--lr", str(args.lr), "--vis_backbone_lr_mul", "2", "--warmup_ratio", "0.05", "--decay", "0.001",
        "--size_epoch", str(args.epochs), "--steps_per_epoch", str(args.steps // args.epochs),
        "--n_workers", "0", "--precision", args.precision, "--find_unused_parameters", "true",
        "--logging_steps", "25", "--tensorboard", "false", "--save_model_every_epoch", "false",
        "--eval_every", "0", "--seed", str(args.seed), "--path_output", str(out), "--rerank_k", "4",
        "--contrastive_dim", "64", "--size_option", "3",
    ]  # fmt: skip


def long_argv(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    entries = [
        {"type": "paragraph-retrieval", "task": PARAGRAPH_TASK, "long_stage": 0, "retrieval_mode": "rerank",
         "vtm_negatives": 1,
         "size_txt": 28},
        {"type": "long-qa", "task": QA_TASK, "size_txt": 40, "task_weight": 2.0},
    ]  # fmt: skip
    return [
        *common_argv(data, out, args), "--datasets", json.dumps(entries),
        "--vis_window", "[16, 4, 4]", "--vis_temporal_windows", "[4, 8, 16]", "--vis_local_window", "4",
        "--long_clips", "4", "--long_frames_per_clip", "4", "--size_frame", "16", "--max_size_frame", "16",
        "--long_form_dim", "64", "--max_sentences", "4", "--long_size_sentence", "10",
        "--contrastive_text_pool", "mean",
    ]  # fmt: skip


def short_argv(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    entries = [
        {"type": "retrieval", "task": SHORT_RETRIEVAL_TASK, "vtc_weight": 1.0, "retrieval_mode": "rerank",
         "vtm_negatives": 1,
         "size_txt": 28},
        {"type": "qamc", "task": SHORT_QA_TASK, "mc_style": "sequence", "size_txt": 40, "task_weight": 2.0},
    ]  # fmt: skip
    return [*common_argv(data, out, args), "--datasets", json.dumps(entries), "--vis_window", "[5, 4, 4]",
            "--size_frame", "5"]  # fmt: skip


def train(name: str, argv: list[str], out: Path) -> dict[str, float]:
    """One model through main_multi_task_mlm's code; its final test metrics (reused when it finished)."""
    from lib.tasks.run import run

    metrics = out / "metrics.json"
    if metrics.is_file():
        print(f"      {name}: reusing {metrics}", flush=True)
        return json.loads(metrics.read_text())
    started = time.perf_counter()
    found = run("multi-task", argv)
    print(f"      {name}: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lib.demo.suites.long", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default="_datasets/demo_long")
    p.add_argument("--out", default="_snapshot/demo_long")
    p.add_argument("--n_train", type=int, default=480, help="training videos (random event orders)")
    p.add_argument("--n_groups", type=int, default=10, help="test groups (one event set in n_orders orders)")
    p.add_argument("--n_orders", type=int, default=4, help="orders per test group (the hard distractors)")
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps of each model")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    p.add_argument("--only", choices=("long", "short"), default=None, help="train one of the two models")
    return p.parse_args(argv)


LONG_KEYS = {
    "paragraph R@1 (dual path)": f"paragraph-retrieval_{PARAGRAPH_TASK}/test/dual/t2v_R1",
    "paragraph R@1 (re-ranked)": f"paragraph-retrieval_{PARAGRAPH_TASK}/test/rerank/t2v_R1",
    "order questions (after / before)": f"long-qa_{QA_TASK}/test/acc",
}
SHORT_KEYS = {
    "paragraph R@1 (dual path)": f"retrieval_{SHORT_RETRIEVAL_TASK}/test/dual/t2v_R1",
    "paragraph R@1 (re-ranked)": f"retrieval_{SHORT_RETRIEVAL_TASK}/test/t2v_R1",
    "order questions (after / before)": f"qamc_{SHORT_QA_TASK}/test/acc",
}


def rows(
    long: dict[str, float], short: dict[str, float], summary: dict[str, Any], n_orders: int
) -> list[dict]:
    """The report: each number as a fraction, beside its target and chance level."""
    retrieval_chance = f"{1 / summary['videos']['test']:.3f} (order-blind: {1 / n_orders:.2f})"
    out = []
    for metric, key in LONG_KEYS.items():
        qa = metric.startswith("order")
        out.append(
            {
                "metric": metric,
                "long": long[key] / 100.0 if key in long else None,
                "short": short[SHORT_KEYS[metric]] / 100.0 if SHORT_KEYS[metric] in short else None,
                "target": TARGETS["order_qa" if qa else "paragraph_r1"],
                "chance": "0.333" if qa else retrieval_chance,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"[1/3] long demo data -> {data}", flush=True)
    summary = build_data(data, args.seed, args.n_train, args.n_groups, args.n_orders)
    print(f"      {summary['videos']} videos, {summary['questions']} questions", flush=True)
    long, short = {}, {}
    if args.only in (None, "long"):
        print("[2/3] long-form model (4 clips x 4 frames, HTWA, paragraph-retrieval + long-qa)", flush=True)
        long = train("long-form", long_argv(data, out / "long", args), out / "long")
    if args.only in (None, "short"):
        print("[3/3] short-clip model (5 frames, retrieval + qamc)", flush=True)
        short = train("short-clip", short_argv(data, out / "short", args), out / "short")
    table = rows(long, short, summary, args.n_orders)
    seconds = time.perf_counter() - started
    write_json_atomic(out / "metrics.json", {"summary": summary, "steps": args.steps, "rows": table,
                                             "wall_seconds": seconds}, indent=2)  # fmt: skip
    lines = ["| metric | long-form | 5-frame short-clip | target | chance |", "|---|---:|---:|---:|---|"]
    for r in table:
        cells = [f"{r[k]:.3f}" if isinstance(r[k], float) else "-" for k in ("long", "short")]
        lines.append(f"| {r['metric']} | {cells[0]} | {cells[1]} | >= {r['target']} | {r['chance']} |")
    (out / "report.md").write_text(
        "# Long-form demo\n\n" + "\n".join(lines) + f"\n\n{seconds / 60:.1f} min\n"
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
