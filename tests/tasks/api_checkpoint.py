"""A tiny all-task checkpoint for the API and CLI tests, saved by the engine's own hook (no training).

The run config is a multi-task config over the demo data (every task kind, both multiple-choice styles);
the tasks are built from it exactly as ``lib.tasks.run`` builds them, and the folder is written with
``lib.tasks.checkpoint_folder.save_model_fn`` — what every training run calls at epoch ends.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lib.engine.config import Config, load_config
from lib.tasks.build import build_model
from lib.tasks.checkpoint_folder import save_model_fn
from lib.tasks.common import Task, load_tokenizer
from lib.tasks.run import build_tasks

DATASETS = [
    {"type": "retrieval", "task": "demo-retrieval"},
    {"type": "qaoe", "task": "demo-qa"},
    {"type": "qamc", "task": "demo-mc", "mc_style": "sequence", "size_txt": 60, "mc_shifts": 3},
    {"type": "qamc", "task": "demo-retmc", "mc_style": "retrieval"},
    {"type": "captioning", "task": "demo-captioning", "max_gen_length": 4},
]


def tiny_multi_task_args(demo_data: Path, minilm_dir: Path, path_output: Path) -> list[str]:
    return [
        "--type", "multi-task", "--task", "demo-multi-task", "--dataset", "demo",
        "--datasets", json.dumps(DATASETS),
        "--data_dir", str(demo_data),
        "--txt_backbone", str(minilm_dir), "--fusion_encoder", str(minilm_dir), "--fusion_layers", "2",
        "--vis_backbone_size", "custom", "--vis_embed_dim", "16", "--vis_depths", "[1, 1, 1, 1]",
        "--vis_heads", "[1, 2, 4, 8]", "--vis_window", "[2, 4, 4]", "--vis_backbone_init", "random",
        "--kinetics", "-1", "--size_img", "64", "--size_frame", "4", "--size_txt", "16", "--size_batch", "4",
        "--n_workers", "0", "--path_output", str(path_output),
    ]  # fmt: skip


@dataclass
class Built:
    folder: Path
    cfg: Config
    tasks: list[Task]
    tokenizer: object
    model: torch.nn.Module

    def task(self, name: str) -> Task:
        return next(t for t in self.tasks if t.cfg.task == name)


@functools.cache
def build_checkpoint(demo_data: Path, minilm_dir: Path) -> Built:
    """The checkpoint, built once per test session beside the session's demo data."""
    root = demo_data.parent / "api_checkpoint"
    cfg = load_config(tiny_multi_task_args(demo_data, minilm_dir, root / "run"))
    tokenizer = load_tokenizer(cfg.txt_backbone)
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer).eval()
    tasks = build_tasks(cfg, tokenizer)
    folder = root / "ckpt"
    save_model_fn(tokenizer, cfg, tasks)(model, folder)
    return Built(folder, cfg, tasks, tokenizer, model)
