"""A complete small task on the engine, launched by the engine tests (1 process or torchrun).

Two streams share one model: "reg" (regression, MSE) and "cls" (classification, CE). Items are made
from their index, with a little random noise (augmentation drawn from the global RNGs, which the engine
seeds per item). Besides the engine's `--key value` options, the script takes its own `--toy_*` options:
    --toy_streams reg,cls   streams to train            --toy_sizes 64,32     their dataset sizes
    --toy_dropout 0.0       dropout in the model        --toy_eval_items 11   evaluation set size
    --toy_nan_ids [5]       item ids with a NaN input   --toy_kill_at N       rank 0 SIGKILLs itself at call N
    --toy_step_sleep 0.0    seconds each step call sleeps (a known pace for time-budget runs)
    --toy_starts 0,0.5      each stream's task_start (default: all 0)
    --toy_stop_after N      a callback (StopAfter) ends the run after N epochs (0: none)
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lib.engine.callbacks import Callback  # noqa: E402
from lib.engine.checkpointing import seed_everything  # noqa: E402
from lib.engine.config import load_config  # noqa: E402
from lib.engine.distributed import (  # noqa: E402
    eval_subset,
    gather_eval,
    get_rank,
    init_distributed,
    move_to_device,
)
from lib.engine.trainer import Trainer, TrainStream  # noqa: E402

DIM, HIDDEN, CLASSES = 6, 16, 3
TOY_DEFAULTS = {
    "streams": "reg,cls",
    "sizes": "64,32",
    "dropout": "0.0",
    "eval_items": "11",
    "nan_ids": "[]",
    "kill_at": "0",
    "step_sleep": "0",
    "starts": "",
    "stop_after": "0",
}


def split_toy_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Take the `--toy_name value` pairs out of argv."""
    toy, rest = dict(TOY_DEFAULTS), []
    i = 0
    while i < len(argv):
        if argv[i].startswith("--toy_"):
            toy[argv[i][len("--toy_") :]] = argv[i + 1]
            i += 2
        else:
            rest.append(argv[i])
            i += 1
    return toy, rest


def _features(index: int) -> torch.Tensor:
    return torch.randn(DIM, generator=torch.Generator().manual_seed(1000 + index))


class ToyData(Dataset):
    """Item i: features from i (+ noise from the global RNG), a linear target and a class label."""

    def __init__(self, n: int, nan_ids: set[int], noise: float = 0.05):
        self.n, self.nan_ids, self.noise = n, nan_ids, noise

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        x = _features(i)
        target = x.sum() * 0.5
        label = int(x[0] > 0) + int(x[1] > 0)
        x = x + self.noise * torch.randn(DIM)
        if i in self.nan_ids:
            x[0] = float("nan")
        return {"id": i, "x": x, "y": target, "label": label}


def collate(items: list[dict]) -> dict:
    return {
        "ids": [it["id"] for it in items],
        "x": torch.stack([it["x"] for it in items]),
        "y": torch.stack([it["y"] for it in items]),
        "label": torch.tensor([it["label"] for it in items]),
    }


class ToyModel(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.swin = nn.Sequential(nn.Linear(DIM, HIDDEN), nn.GELU())  # "swin." gets vis_backbone_lr_mul
        self.norm = nn.LayerNorm(HIDDEN)
        self.drop = nn.Dropout(dropout)
        self.head_reg = nn.Linear(HIDDEN, 1)
        self.head_cls = nn.Linear(HIDDEN, CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.swin(x)))


def reg_step(model: ToyModel, batch: dict) -> dict[str, torch.Tensor]:
    pred = model.head_reg(model.features(batch["x"])).squeeze(-1).float()
    return {"loss": ((pred - batch["y"]) ** 2).mean(), "mae": (pred - batch["y"]).abs().mean()}


def cls_step(model: ToyModel, batch: dict) -> dict[str, torch.Tensor]:
    logits = model.head_cls(model.features(batch["x"])).float()
    acc = (logits.argmax(-1) == batch["label"]).float().mean()
    return {"loss": nn.functional.cross_entropy(logits, batch["label"]), "acc": acc}


_CALLS = {"n": 0}  # step-function calls of this process, over all streams


def killing(step_fn, kill_at: int):
    """Wrap a step function so rank 0 SIGKILLs itself when its `kill_at`-th step call starts."""
    calls = _CALLS

    def wrapped(model, batch):
        calls["n"] += 1
        if get_rank() == 0 and calls["n"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return step_fn(model, batch)

    return wrapped


def sleeping(step_fn, seconds: float):
    def wrapped(model, batch):
        time.sleep(seconds)
        return step_fn(model, batch)

    return wrapped


class StopAfter(Callback):
    """Shortens the run to ``epochs`` epochs when one ends; its state counts the epochs it saw end."""

    def __init__(self, epochs: int):
        self.epochs, self.ended = epochs, 0

    def on_epoch_end(self, trainer: Trainer) -> None:
        self.ended += 1
        if trainer.n_epochs > self.epochs >= trainer.epoch:
            trainer.set_length(self.epochs)

    def state_dict(self) -> dict:
        return {"ended": self.ended}

    def load_state_dict(self, state: dict) -> None:
        self.ended = state["ended"]


def make_evaluate(path_output: Path, n_items: int, device: torch.device):
    data = ToyData(n_items, set(), noise=0.0)

    def evaluate(model: ToyModel, epoch: int) -> dict[str, float]:
        local = []
        for batch in DataLoader(eval_subset(data), batch_size=4, collate_fn=collate):
            batch = move_to_device(batch, device)
            pred = model.head_reg(model.features(batch["x"])).squeeze(-1).float()
            local += [(i, float(e)) for i, e in zip(batch["ids"], (pred - batch["y"]) ** 2)]
        results = gather_eval(local)
        if get_rank() == 0:
            (path_output / f"eval_ids_epoch{epoch}.json").write_text(json.dumps([i for i, _ in results]))
        return {"mse": sum(e for _, e in results) / len(results), "n_items": len(results)}

    return evaluate


def main(argv: list[str], callbacks: list[Callback] | None = None) -> dict:
    toy, engine_argv = split_toy_args(argv)
    callbacks = list(callbacks or [])
    if int(toy["stop_after"]):
        callbacks.append(StopAfter(int(toy["stop_after"])))
    cfg = load_config(engine_argv)
    dist = init_distributed(cfg.dist_timeout_s)
    seed_everything(cfg.seed)
    model = ToyModel(float(toy["dropout"]))
    nan_ids = set(json.loads(toy["nan_ids"]))
    steps = {"reg": reg_step, "cls": cls_step}
    kill_at = int(toy["kill_at"])
    streams = []
    names = toy["streams"].split(",")
    starts = [float(x) for x in toy["starts"].split(",")] if toy["starts"] else [0.0] * len(names)
    for name, size, start in zip(names, toy["sizes"].split(","), starts):
        step_fn = killing(steps[name], kill_at) if kill_at else steps[name]
        step_fn = sleeping(step_fn, float(toy["step_sleep"])) if float(toy["step_sleep"]) else step_fn
        data = ToyData(int(size), nan_ids)
        streams.append(TrainStream(name, data, collate, cfg.size_batch, step_fn, start=start))
    evaluate = make_evaluate(Path(cfg.path_output), int(toy["eval_items"]), dist.device)
    return Trainer(cfg, model, streams, evaluate_fn=evaluate, callbacks=callbacks).fit()


if __name__ == "__main__":
    summary = main(sys.argv[1:])
    if get_rank() == 0:
        print("SUMMARY " + json.dumps(summary))
