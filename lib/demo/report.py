"""The demo's report: the test metrics beside a video-blind model's chance level and the targets, training
curves and a picture of test videos with the model's outputs (``OUT/{metrics.json, report.md, curves.png,
examples.png}``)."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from lib.data.annotations import load_annotations, read_json_object

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
