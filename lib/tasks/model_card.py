"""The checkpoint's README.md: tasks, inputs, evaluation protocol (each task's own sentence), numbers,
architecture and use."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors import safe_open

from lib.model.checkpoint import MODEL_CONFIG, MODEL_WEIGHTS
from lib.model.config import INFERENCE_KEY
from lib.tasks.registry import get_task
from lib.utils.atomic import write_text

MODEL_CARD = "README.md"


def write_model_card(folder: Path, metrics: Mapping[str, float] | None = None, label: str = "") -> Path:
    config = json.loads((folder / MODEL_CONFIG).read_text())
    name = folder.name.removesuffix(".tmp")  # folders are written under NAME.tmp, then renamed
    text = model_card(config, metrics or {}, label, n_parameters(folder / MODEL_WEIGHTS), name)
    return write_text(folder / MODEL_CARD, text)


def n_parameters(weights: Path) -> int:
    """Number of stored values in a safetensors file (read from its header; no tensor is loaded)."""
    with safe_open(str(weights), framework="pt") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118


def model_card(
    config: Mapping[str, Any], metrics: Mapping[str, float], label: str, n_params: int, name: str = "DIR"
) -> str:
    """README.md of a checkpoint: tasks, inputs, evaluation protocol, numbers, architecture, use."""
    inference = config.get(INFERENCE_KEY, {})
    video, tasks = inference.get("video", {}), inference.get("tasks", {})
    kinds = [k for k, entries in tasks.items() if entries]
    lines = [
        "# LAVENDER checkpoint",
        "",
        "One video-language model (Video Swin + BERT fusion encoder + ONE masked-language-model head) that "
        "serves every task as masked-token prediction. "
        f"Trained for: {', '.join(kinds) or 'no task (MLM only)'}.",
        "",
        "## Use",
        "",
        "```python",
        "from lib.api import Lavender",
        "",
        f'model = Lavender.from_pretrained("{name}")  # device="cuda" for a GPU',
        'model.caption("video.mp4")',
        'model.answer("video.mp4", "what is the man doing?")',
        'model.answer("video.mp4", "what is the man doing?", ["cooking", "singing", "running"])',
        'model.retrieve(["a man is cooking", "a dog runs"], ["a.mp4", "b.mp4"], top_k=1)',
        'model.match("video.mp4", "a man is cooking")',
        "```",
        "",
        "```",
        f"python -m lib.predict --ckpt {name} caption videos/",
        f'python -m lib.predict --ckpt {name} answer video.mp4 --question "what is the man doing?"',
        "```",
        "",
        "## Tasks",
        "",
        "| task | trained on | text length | settings |",
        "|---|---|---:|---|",
    ]
    for kind in kinds:
        for entry in tasks[kind]:
            hidden = ("name", "size_txt", "video", "answers")
            shown = {k: v for k, v in entry.items() if k not in hidden and v is not None}
            if "answers" in entry:
                shown["answers"] = f"{len(entry.get('answers', []))} candidates"
            settings = ", ".join(f"{k} {v}" for k, v in shown.items())
            lines.append(f"| {kind} | {entry['name']} | {entry['size_txt']} | {settings} |")
    lines += [
        "",
        "## Inputs",
        "",
        f"- A video file becomes {video.get('frames_per_video')} stored frames exactly as the frame "
        f"extractor made the training data ({video.get('frame_rule')}; "
        f"JPEG quality {video.get('jpeg_quality')}, "
        f"short side {video.get('size_short') or 'kept'}; source: {video.get('source')}).",
        f"- A clip is {video.get('size_frame')} of the stored frames (evenly spaced, evaluation rule), "
        f"{video.get('size_img')}x{video.get('size_img')} pixels, transform {video.get('transform')}, "
        "ImageNet-normalised.",
        "",
        "## Evaluation protocol",
        "",
    ]
    lines += [f"- {kind} ({e['name']}): {get_task(kind).protocol(e)}" for kind in kinds for e in tasks[kind]]
    lines += ["", "## Results", ""]
    if metrics:
        lines += [f"{label}:" if label else "Metrics:", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    else:
        lines.append("Not evaluated yet.")
    arch_keys = ("swin_size", "swin_embed_dim", "swin_depths", "hidden_size", "num_layers")
    arch = {k: config.get(k) for k in arch_keys}
    lines += [
        "",
        "## Model",
        "",
        f"{n_params / 1e6:.1f} M parameters; "
        + ", ".join(f"{k} {v}" for k, v in arch.items())
        + f"; vocabulary {config.get('vocab_size')}.",
        "",
        "## Training",
        "",
        "Data: "
        + "; ".join(
            f"{t.get('type', t.get('family'))} {t.get('task')} ({t.get('dataset')})"
            for t in inference.get("trained_on", [])
        )
        + ".  ",
        "Run: " + ", ".join(f"{k} {v}" for k, v in inference.get("training", {}).items()) + ".",
    ]
    if inference.get("notes"):
        lines += ["", "## Notes", "", *[f"- {n}" for n in inference["notes"]]]
    return "\n".join(lines) + "\n"
