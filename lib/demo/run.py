"""The main job: real encoded demo videos → extractor → TSV → ONE multi-task model → every task → a report.

    python -m lib.demo                      # what `make demo` runs
    python -m lib.demo --seed 1             # another demo dataset (same recipe, no tuning per seed)
    python -m lib.demo --quick              # a minute-scale version (CI uses it)

Steps: (1) build the synthetic dataset (`lib.demo.synthetic`, H.264 files through the real extractor);
(2) pretrain the Video Swin alone on the train videos' attribute labels, the demo's stand-in for LAVENDER's
Kinetics-pretrained Swin (`lib.demo.backbone`), and optionally pretrain briefly (MLM + matching) with
`main_pretrain_mlm`'s code; (3) fit the training to the
wall-clock budget: time a few real steps of every task and one validation pass on this machine, and plan
as many epochs of the config as fit (`--budget_min`, default 15 minutes for the whole command; at most the
config's `size_epoch`), which the run then re-fits after every epoch to the pace it measures
(`time_budget_s`); (4) train one model on every task with `main_multi_task_mlm`'s code (config
`_args/args_demo_multi-task.json`) and evaluate every task on the held-out test split with the tasks' own
evaluation; (5) print a table with the chance level beside each number and write
`_snapshot/demo/{metrics.json, report.md, curves.png, examples.png}`.

A faster machine trains longer within the same budget and learns more; `--size_epoch N` fixes the length
(the same numbers on any machine). Re-running reuses what exists (data, a finished run); after Ctrl-C the
next run resumes from the last checkpoint with the length it had chosen.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lib.data.annotations import load_annotations, read_json_object, write_json_atomic
from lib.demo.synthetic import make_demo_dataset
from lib.engine.checkpointing import list_checkpoints

CONFIG = Path("_args/args_demo_multi-task.json")
# --quick: the shortened demo CI runs as a learning test (tests/demo/test_demo.py): 240 train videos, 32-px
# frames (2x2 Swin tokens per frame: steps ~3x cheaper than the demo's 64 px) and 3 fusion layers, not 4 (with
# 4 the test took 8.2 min and the whole CI 14.95 of its 15). Its length is what ~6 minutes buy on a 2-core
# CPU: 4 epochs x 300 steps with bf16 autocast (the demo's `precision auto` where the CPU has native bf16), 3
# x 200 in fp32 (~1.6x slower per step at this size). One-sequence MC needs the longer run: it moves only once
# retrieval has grounded the captions (0.35-0.43 after 600-800 steps, 0.50-0.73 after 1,200).
QUICK = {"n_train": 240, "n_val": 10, "n_test": 60, "swin_steps": 300}
QUICK_LENGTH = {
    "autocast": {"size_epoch": 4, "steps_per_epoch": 300},
    "fp32": {"size_epoch": 3, "steps_per_epoch": 200},
}
QUICK_OVERRIDES = ["--size_img", "32", "--fusion_layers", "3"]
# (task name in the config, metric, label, target) — what the table shows, in order
ROWS = (
    ("retrieval_demo-retrieval", "t2v_R1", "retrieval text→video R@1", 0.30),
    ("retrieval_demo-retrieval", "t2v_R5", "retrieval text→video R@5", None),
    ("retrieval_demo-retrieval", "t2v_R10", "retrieval text→video R@10", None),
    ("qaoe_demo-qa", "acc", "open-ended QA accuracy", 0.85),
    ("qamc_demo-mc", "acc", "multiple choice (one sequence) accuracy", 0.90),
    ("qamc_demo-retmc", "acc", "multiple choice (retrieval style) accuracy", 0.90),
    ("captioning_demo-captioning", "Bleu_4", "captioning BLEU-4", None),
    ("captioning_demo-captioning", "METEOR", "captioning METEOR", None),
    ("captioning_demo-captioning", "CIDEr", "captioning CIDEr", 1.0),
)
PERCENT_METRICS = ("t2v_R1", "t2v_R5", "t2v_R10", "acc")  # reported by the tasks in percent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lib.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the demo dataset (and of training)")
    p.add_argument("--data", default=None, help="dataset folder (default _datasets/demo[_seedN])")
    p.add_argument("--out", default="_snapshot/demo", help="report folder; the run goes to OUT/run")
    p.add_argument("--n_train", type=int, default=1200)
    p.add_argument("--n_val", type=int, default=30)
    p.add_argument("--n_test", type=int, default=60)
    p.add_argument(
        "--budget_min",
        type=float,
        default=15.0,
        help="wall-clock minutes for the whole command: training gets the epochs that fit (0: the config's)",
    )
    p.add_argument("--size_epoch", type=int, default=None, help="train exactly this many epochs")
    p.add_argument(
        "--steps_per_epoch", type=int, default=None, help="fix the steps per epoch (default: the budget's)"
    )
    p.add_argument(
        "--swin_steps",
        type=int,
        default=600,
        help="steps of the Video Swin's attribute pretraining on the train videos (0: start it random)",
    )
    p.add_argument("--pretrain_epochs", type=int, default=0, help="brief MLM + matching pretraining first")
    quick = (
        f"small and short (CI): {json.dumps(QUICK)} {' '.join(QUICK_OVERRIDES)}; {json.dumps(QUICK_LENGTH)}"
    )
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--workers", type=int, default=2, help="extraction processes")
    p.add_argument("overrides", nargs="*", help="extra --key value pairs for the multi-task config")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in {**QUICK, **QUICK_LENGTH[run_precision(args.overrides)]}.items():
            if getattr(args, k) in (None, p.get_default(k)):
                setattr(args, k, v)
        args.overrides = QUICK_OVERRIDES + list(args.overrides)
    return args


def run_precision(overrides: list[str]) -> str:
    """What the multi-task run will compute in (the config with ``overrides``): "autocast" (bf16, or fp16 on a
    GPU without bf16) or "fp32"."""
    from lib.engine.config import load_config
    from lib.engine.distributed import select_device
    from lib.engine.trainer import resolve_precision

    precision = load_config(["--config", str(CONFIG), *overrides]).precision
    return "autocast" if resolve_precision(precision, select_device(0)) is not None else "fp32"


# ------------------------------------------------------------------------------------------------ steps


def build_data(args: argparse.Namespace) -> Path:
    data = Path(args.data or ("_datasets/demo" if args.seed == 0 else f"_datasets/demo_seed{args.seed}"))
    if args.quick and args.data is None:
        data = data.with_name(data.name + "_quick")
    print(f"[1/6] demo data → {data}", flush=True)
    make_demo_dataset(
        data, seed=args.seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, workers=args.workers
    )
    return data


def run_argv(args: argparse.Namespace, data: Path, out: Path) -> list[str]:
    argv = [
        "--config",
        str(CONFIG),
        "--data_dir",
        str(data),
        "--path_output",
        str(out),
        "--seed",
        str(args.seed),
    ]
    for key in ("size_epoch", "steps_per_epoch", "time_budget_s"):
        if getattr(args, key, None) is not None:
            argv += [f"--{key}", str(getattr(args, key))]
    if (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        print(f"      resuming the run in {out}", flush=True)
        argv += ["--resume", "true"]
    return argv + list(args.overrides)


def pretrain_swin(args: argparse.Namespace, data: Path, out: Path) -> Path | None:
    """The Video Swin pretrained on the train videos' attributes (``--swin_steps`` 0: none); its weights."""
    if args.swin_steps <= 0:
        return None
    from lib.demo.backbone import pretrain_video_swin
    from lib.engine.config import load_config

    folder = out / "backbone"
    print(f"[2/6] Video Swin pretraining on the train videos' attributes → {folder}", flush=True)
    cfg = load_config(["--config", str(CONFIG), "--data_dir", str(data), *args.overrides])
    return pretrain_video_swin(cfg, data, folder, steps=args.swin_steps, seed=args.seed)


def pretrain(args: argparse.Namespace, data: Path, out: Path, init: Path | None) -> Path | None:
    """Brief MLM + matching pretraining on the demo captions (from ``init``); returns its model folder."""
    if args.pretrain_epochs <= 0:
        return init
    run_dir = out / "pretrain"
    model_dir = run_dir / "model"
    print(f"[3/6] pretraining (MLM + matching) → {run_dir}", flush=True)
    if (run_dir / "metrics.json").is_file():
        return model_dir
    from lib.tasks.run import run

    argv = run_argv(args, data, run_dir) + [
        "--type", "pretrain", "--task", "demo-pretrain", "--dataset", "demo",
        "--datasets", "[]", "--size_epoch", str(args.pretrain_epochs),
    ] + (["--path_ckpt", str(init)] if init else [])  # fmt: skip
    run("pretrain", argv)
    return model_dir


# ------------------------------------------------------------------------------------ fitting the budget

# Share of the remaining budget the first plan (from steps timed alone) fills. Steps inside a run cost more
# than timed alone (the DataLoader worker shares the 2 cores; clipping, logging; the CPU's speed drifts):
# in-run / timed was 1.08-1.43 on a 2-core AMD EPYC (Zen 4, bf16) and up to 1.26 on a 2-core Xeon. The run
# then re-fits its number of epochs after each one to the pace it measures (``time_budget_s``), within
# TIME_BUDGET_SHARE of the remaining budget (the rest: one epoch running slower than the ones before).
SAFETY = 0.80
TIME_BUDGET_SHARE = 0.92
REPORT_S = 30.0  # chance levels, curves, the examples picture (a few captions and answers), measured < 20 s


MIN_STEPS = 10  # the shortest epoch a budget too small for one configured epoch shrinks to


def test_to_val_items(task: Any, args: argparse.Namespace) -> float:
    """How many times a task's validation items its test split holds (the test split's evaluation time as a
    multiple of the timed validation pass): e.g. 10 for multiple choice, with MC_TEST_ITEMS per test video
    and one per val video; the ratio of videos for a task without annotation splits."""
    from lib.tasks.common import AnnotatedTask

    if isinstance(task, AnnotatedTask) and {"val", "test"} <= set(task.eval_splits()):  # both non-empty
        return len(task.ann["test"]) / len(task.ann["val"])
    return max(1.0, args.n_test / max(1, args.n_val))


def plan_length(
    left_s: float, step_s: float, steps_per_epoch: int, eval_s: float, max_epochs: int, stretch: bool = True
) -> tuple[int, int]:
    """(epochs, steps per epoch) that use ``SAFETY`` of ``left_s``, each epoch ending with an evaluation of
    ``eval_s``: as many whole epochs of ``steps_per_epoch`` as fit (at least one, at most ``max_epochs``).
    With ``stretch``, below ``max_epochs`` each epoch is then lengthened to use the remainder too (a budget
    for 3.6 epochs trains 3 longer ones), and a budget for less than one epoch shortens it (to at least
    ``min(MIN_STEPS, steps_per_epoch)`` steps)."""
    usable = SAFETY * left_s
    epochs = int(min(max_epochs, max(1, usable // (steps_per_epoch * step_s + eval_s))))
    fits = usable >= epochs * (steps_per_epoch * step_s + eval_s)
    if not stretch or (epochs == max_epochs and fits):
        return epochs, steps_per_epoch
    steps = int((usable - epochs * eval_s) // (epochs * step_s))
    return epochs, max(min(MIN_STEPS, steps_per_epoch), steps)


def fit_epochs(args: argparse.Namespace, data: Path, out: Path, init: Path | None, started: float) -> dict:
    """How long to train: ``--size_epoch``, the length of an interrupted run, or as long as fits the budget on
    this machine (measured: a few real steps of every stream and one validation pass)."""
    run_dir = out / "run"
    if args.size_epoch is not None:
        return {"size_epoch": args.size_epoch, "source": "--size_epoch"}
    if (run_dir / "metrics.json").is_file():
        return {"size_epoch": None, "source": "finished run"}
    if (run_dir / "args.json").is_file() and list_checkpoints(run_dir / "checkpoints"):
        saved = json.loads((run_dir / "args.json").read_text())
        return {
            "size_epoch": saved["size_epoch"],
            "steps_per_epoch": saved.get("steps_per_epoch"),
            "time_budget_s": saved.get("time_budget_s", 0.0),
            "source": "the interrupted run",
        }
    if args.budget_min <= 0:
        return {"size_epoch": None, "source": "the config"}
    print("[4/6] fitting the training to the budget (timing steps and a validation pass)", flush=True)
    import torch

    from lib.demo.timing import mean_step_seconds, time_train_steps
    from lib.engine.trainer import autocast, resolve_precision
    from lib.tasks.run import evaluate_tasks, prepare

    argv = run_argv(args, data, run_dir) + (["--path_ckpt", str(init)] if init else [])
    cfg, _, model, tasks = prepare("multi-task", argv)
    streams = [s for t in tasks for s in t.train_streams()]
    step_s = mean_step_seconds(time_train_steps(model, streams, cfg), streams, cfg)
    model.eval()
    device = next(model.parameters()).device
    eval_s = test_s = 0.0  # one validation pass (after every epoch when eval_every is 1); the final test one
    with torch.no_grad(), autocast(device, resolve_precision(cfg.precision, device)):
        for task in tasks:
            measured = time.perf_counter()
            evaluate_tasks([task], model, ["val"])
            seconds = time.perf_counter() - measured
            eval_s += seconds
            test_s += seconds * test_to_val_items(task, args)
    left = args.budget_min * 60 - (time.perf_counter() - started) - test_s - REPORT_S
    epoch_eval_s = eval_s if cfg.eval_every == 1 else 0.0
    epochs, steps_per_epoch = plan_length(
        left, step_s, cfg.steps_per_epoch, epoch_eval_s, cfg.size_epoch, stretch=args.steps_per_epoch is None
    )
    capped = epochs == cfg.size_epoch and steps_per_epoch == cfg.steps_per_epoch  # the config's length fits
    plan = {
        "size_epoch": epochs,
        "steps_per_epoch": steps_per_epoch,
        "time_budget_s": 0.0 if capped else max(1.0, TIME_BUDGET_SHARE * left),  # spent: stop when it can
        "source": f"{args.budget_min:g}-minute budget",
        "max_epochs": cfg.size_epoch,
        "steps": epochs * steps_per_epoch,
        "step_s": step_s,
        "eval_s": eval_s,
    }
    print(
        f"      {1000 * step_s:.0f} ms per step, {eval_s:.0f} s per validation pass → {epochs} epochs × "
        f"{steps_per_epoch} steps = {plan['steps']} steps (at most {cfg.size_epoch} × {cfg.steps_per_epoch})",
        flush=True,
    )
    return plan


def train_all_tasks(args: argparse.Namespace, data: Path, out: Path, init: Path | None) -> dict[str, float]:
    run_dir = out / "run"
    print(f"[5/6] one model, every task → {run_dir}", flush=True)
    if (run_dir / "metrics.json").is_file():
        print("      (finished run found: reusing it)", flush=True)
        return json.loads((run_dir / "metrics.json").read_text())
    from lib.tasks.run import run

    argv = run_argv(args, data, run_dir) + (["--path_ckpt", str(init)] if init else [])
    return run("multi-task", argv)


# ------------------------------------------------------------------------------------------ chance levels


def chance_levels(data: Path) -> dict[tuple[str, str], float]:
    """What a model that ignores the video scores on the same test split (computed, not assumed)."""
    ret = load_annotations(data / "txt_demo-retrieval.json", "retrieval", splits=["test"])["test"]
    n_videos = len({r.video for r in ret})
    qa = load_annotations(data / "txt_demo-qa.json", "qa_open", splits=["train", "test"])
    answers_by_type: dict[str, set[str]] = defaultdict(set)
    for item in qa["train"]:
        answers_by_type[item.qtype or ""].add(item.answer_text)
    test_types = Counter(item.qtype or "" for item in qa["test"])
    qa_chance = sum(n / max(1, len(answers_by_type[t])) for t, n in test_types.items()) / sum(
        test_types.values()
    )
    chance: dict[tuple[str, str], float] = {
        ("retrieval_demo-retrieval", f"t2v_R{k}"): min(1.0, k / n_videos) for k in (1, 5, 10)
    }
    chance[("qaoe_demo-qa", "acc")] = qa_chance
    for t, _n in test_types.items():
        chance[("qaoe_demo-qa", f"acc_type/{t}")] = 1 / max(1, len(answers_by_type[t]))
    chance[("qamc_demo-mc", "acc")] = chance[("qamc_demo-retmc", "acc")] = 1 / 5
    chance.update(caption_chance(data))
    return chance


def caption_chance(data: Path, draws: int = 10) -> dict[tuple[str, str], float]:
    """Scores of a video-blind captioner that answers each test video with a random training caption,
    averaged over `draws` draws (one draw's corpus BLEU-4 on 60 videos: 0.000-0.063 across demo seeds)."""
    from lib.metrics.caption import coco_scores

    ann = load_annotations(data / "txt_demo-captioning.json", "caption", splits=["train", "test"])
    pool = [r.text for r in ann["train"]]
    refs: dict[str, list[str]] = defaultdict(list)
    for r in ann["test"]:
        refs[r.video].append(r.text)
    rng = random.Random(0)
    totals: dict[str, float] = defaultdict(float)
    for _ in range(draws):
        for k, v in coco_scores({v: rng.choice(pool) for v in refs}, refs, backend="python").items():
            totals[k] += v / draws
    return {("captioning_demo-captioning", k): v for k, v in totals.items()}


# ------------------------------------------------------------------------------------------------ report


def table_rows(metrics: dict[str, float], chance: dict[tuple[str, str], float]) -> list[dict[str, Any]]:
    rows = []
    extra = sorted(k.split("/", 3)[3] for k in metrics if k.startswith("qaoe_demo-qa/test/acc_type/"))
    specs = list(ROWS)
    qa_at = next(i for i, r in enumerate(specs) if r[0] == "qaoe_demo-qa") + 1
    specs[qa_at:qa_at] = [
        ("qaoe_demo-qa", f"acc_type/{t}", f"  QA accuracy: {t} questions", None) for t in extra
    ]
    for task, metric, label, target in specs:
        key = f"{task}/test/{metric}"
        if key not in metrics:
            continue
        value = metrics[key] / 100 if metric.startswith(PERCENT_METRICS) else metrics[key]
        rows.append(
            {
                "metric": label,
                "key": key,
                "value": value,
                "chance": chance.get((task, metric)),
                "target": target,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| metric | test | chance | target |", "|---|---:|---:|---:|"]
    for r in rows:
        chance = "" if r["chance"] is None else f"{r['chance']:.3f}"
        target = (
            ""
            if r["target"] is None
            else f"≥ {r['target']:.2f}" + (" ✓" if r["value"] >= r["target"] else " ✗")
        )
        lines.append(f"| {r['metric']} | {r['value']:.3f} | {chance} | {target} |")
    return "\n".join(lines)


def plot_curves(run_dir: Path, path: Path) -> None:
    """Training loss per task and the validation metrics per epoch, from the run's log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses: dict[str, list[tuple[int, float]]] = defaultdict(list)
    evals: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for line in (run_dir / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "train" and "loss" in rec:
            for name, value in rec.items():
                if name.startswith("loss/"):
                    losses[name[5:]].append((rec["step"], value))
            if not any(k.startswith("loss/") for k in rec):
                losses[rec.get("stream", "all")].append((rec["step"], rec["loss"]))
        elif rec.get("kind") == "eval":
            for _task, metric, label, _ in ROWS:
                key = f"{_task}/val/{metric}"
                if key in rec and metric in ("t2v_R1", "acc", "CIDEr"):
                    scale = 100 if metric in PERCENT_METRICS else 1
                    evals[label].append((rec["epoch"], rec[key] / scale))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, pts in sorted(losses.items()):
        a.plot(*zip(*pts), label=name, lw=1)
    a.set(xlabel="step", ylabel="training loss", yscale="log", title="loss per task")
    a.legend(fontsize=7)
    for name, pts in sorted(evals.items()):
        b.plot(*zip(*pts), marker="o", label=name)
    b.set(xlabel="epoch", ylabel="validation metric", title="validation metrics per epoch")
    b.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def trained_length(run_dir: Path) -> tuple[int, int] | None:
    """(epochs, optimizer steps) the run trained, from its last evaluation record; None without one."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    evals = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "eval"]
    return (evals[-1]["epoch"], evals[-1]["step"]) if evals else None


def describe_length(plan: dict[str, Any], run_dir: Path) -> str:
    """One line on how long the run trained and why."""
    args = json.loads((run_dir / "args.json").read_text()) if (run_dir / "args.json").is_file() else {}
    epochs, steps = args.get("size_epoch"), args.get("steps_per_epoch")
    line = f"{epochs} epochs × {steps} steps" if epochs and steps else "the config's length"
    if "trained_steps" in plan:  # what the run trained (main() adds it)
        line = f"{plan['trained_epochs']} epochs, {plan['trained_steps']} steps"
    if "step_s" in plan:
        line += (
            f": what fits the {plan['source']} here (at most {plan['max_epochs']} epochs; planned "
            f"{plan['size_epoch']} × {plan['steps_per_epoch']} steps at a measured "
            f"{1000 * plan['step_s']:.0f} ms per step and {plan['eval_s']:.0f} s per validation pass, "
            f"re-fitted by the run to its own pace)"
        )
    else:
        line += f" (set by {plan['source']})"
    return line


def write_report(
    out: Path,
    data: Path,
    rows: list[dict[str, Any]],
    metrics: dict,
    seconds: float,
    plan: dict[str, Any],
) -> None:
    run_dir = out / "run"
    curves = out / "curves.png"
    plot_curves(run_dir, curves)
    examples = out / "examples.png"
    example_lines = render_examples(run_dir / "model", data, examples)
    meta = read_json_object(data / "meta_demo.json") if (data / "meta_demo.json").is_file() else {}
    text = "\n".join(
        [
            "# Demo: one multi-task checkpoint on real encoded videos",
            "",
            f"Data: `{data}` ({json.dumps(meta.get('settings', meta.get('config', {})))})  ",
            f"Checkpoint: `{run_dir / 'model'}`  ",
            f"Training: {describe_length(plan, run_dir)}  ",
            f"Wall time of this command: {seconds / 60:.1f} min",
            "",
            "## Test split (held out), with the chance level of a video-blind model",
            "",
            format_table(rows),
            "",
            "## Training curves",
            "",
            "![curves](curves.png)",
            "",
            "## Test videos with the model's outputs",
            "",
            "![examples](examples.png)",
            "",
            *example_lines,
            "",
        ]
    )
    tmp = out / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "report.md")


def render_examples(model_dir: Path, data: Path, path: Path, n: int = 4) -> list[str]:
    """A PNG of a few test videos' frames with the model's caption and answers under each."""
    import cv2
    import numpy as np

    from lib.api import Lavender
    from lib.data.frames import decode_jpeg, save_png
    from lib.data.tsv import TSVFile, frame_columns

    model = Lavender.from_pretrained(model_dir)
    qa = load_annotations(data / "txt_demo-qa.json", "qa_open", splits=["test"])["test"]
    by_video: dict[str, list] = defaultdict(list)
    for item in qa:
        by_video[item.video].append(item)
    tsv = TSVFile(data / "img_demo.tsv")
    panels, lines = [], []
    for video in list(by_video)[:n]:
        frames = [decode_jpeg(b) for b in frame_columns(tsv.row(tsv.index_of(video)))]
        caption = model.caption(frames)
        texts = [f"{video}", f"caption: {caption}"]
        lines.append(f"- `{video}`: caption “{caption}”")
        for item in by_video[video]:
            answer = model.answer(frames, item.question)
            texts.append(f"{item.question} -> {answer} (gt {item.answer_text})")
            lines.append(f"  - {item.question} → **{answer}** (ground truth: {item.answer_text})")
        strip = np.concatenate([cv2.resize(f, (128, 128)) for f in frames], axis=1)
        text = np.full((18 * len(texts) + 8, strip.shape[1], 3), 255, np.uint8)
        for i, t in enumerate(texts):
            cv2.putText(text, t, (4, 16 + 18 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.concatenate([strip, text], axis=0))
    width = max(p.shape[1] for p in panels)
    panels = [np.pad(p, ((0, 6), (0, width - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
    save_png(path, np.concatenate(panels, axis=0))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    out = Path(args.out if not args.quick or args.out != "_snapshot/demo" else "_snapshot/demo_quick")
    out.mkdir(parents=True, exist_ok=True)
    data = build_data(args)
    init = pretrain(args, data, out, pretrain_swin(args, data, out))
    plan = fit_epochs(args, data, out, init, started)
    args.size_epoch = plan["size_epoch"]
    args.steps_per_epoch = plan.get("steps_per_epoch") or args.steps_per_epoch
    args.time_budget_s = plan.get("time_budget_s")  # the run re-fits its epochs to it as it measures its pace
    metrics = train_all_tasks(args, data, out, init)
    trained = trained_length(out / "run")
    if trained:
        plan = {**plan, "trained_epochs": trained[0], "trained_steps": trained[1]}
    print("[6/6] report", flush=True)
    chance = chance_levels(data)
    rows = table_rows(metrics, chance)
    seconds = time.perf_counter() - started
    summary = {
        "data": str(data),
        "seed": args.seed,
        "wall_seconds": seconds,
        "training_length": plan,
        "metrics": {
            r["key"]: {"value": r["value"], "chance": r["chance"], "target": r["target"]} for r in rows
        },
    }
    write_json_atomic(out / "metrics.json", summary, indent=2)
    write_report(out, data, rows, metrics, seconds, plan)
    print()
    print(format_table(rows))
    print(f"\nreport: {out / 'report.md'}  ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
