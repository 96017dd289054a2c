"""The demo's stand-in for a Kinetics-pretrained Video Swin: supervised pretraining on the train videos.

LAVENDER starts from a Video Swin pretrained on Kinetics action labels, so its video tokens already carry
motion and shape. The demo has no such weights, and a Swin trained from scratch *through* the pretrained
MiniLM fusion layers does not learn motion: `python -m lib.demo.diagnostics.attribute_probe` shows direction
learned in 200 steps with a linear head on the mean-pooled Swin, and not at all in 300 steps (loss flat at ln
5) when the same head reads the tokens after the fusion layers (the table is in lib/demo/TUNING.md). So, as
LAVENDER does with Kinetics, the demo first trains the Swin alone to classify the demo videos' attributes
(shape, color, size, count, direction; one linear head each on the mean-pooled features, discarded afterwards)
on the **train split only**, then starts the multi-task model from those Swin weights
(``--vis_backbone_ckpt``, Swin keys only; text and fusion stay all-MiniLM-L6-v2).

:func:`pretrain_video_swin` writes ``swin.safetensors`` (``enc_img.swin.*`` keys) and ``swin.json`` (what it
was trained on and its held-out accuracy per attribute); a re-run with the same request reuses them.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

from lib.data.annotations import write_json_atomic
from lib.data.frames import normalize_frames
from lib.demo.synthetic import ATTRIBUTES
from lib.engine.config import Config
from lib.engine.optim import build_scheduler
from lib.model.encoders.video import VideoEncoder
from lib.tasks.build import model_config
from lib.tasks.common import clip_dataset, open_store

WEIGHTS, RECORD = "swin.safetensors", "swin.json"
SWIN_PREFIX = "enc_img.swin."


def _request(cfg: Config, data: Path, steps: int, batch_size: int, lr: float, seed: int) -> dict[str, Any]:
    """What identifies a pretraining: the data (its metadata digest), the Swin's geometry, the recipe."""
    config = model_config(cfg)
    geometry = {k: v for k, v in config.to_dict().items() if k.startswith("swin_")}
    digest = hashlib.sha256((data / "meta_demo.json").read_bytes()).hexdigest()[:16]
    frames = {"size_frame": cfg.size_frame, "size_img": cfg.size_img}
    recipe = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed}
    return {"data": digest, "geometry": geometry, "frames": frames, "recipe": recipe}


def labelled_clips(cfg: Config, data: Path, split: str, train: bool) -> tuple[Any, list[dict[str, int]]]:
    """The demo `split`'s clips (ids sorted) and, per clip, each attribute's index in ``ATTRIBUTES``."""
    meta = json.loads((data / "meta_demo.json").read_text())["videos"]
    ids = sorted(v for v, m in meta.items() if m["split"] == split)
    if not ids:
        raise ValueError(f"{data / 'meta_demo.json'} has no {split} videos to pretrain the Video Swin on")
    clips = clip_dataset(cfg, open_store(cfg, cfg.dataset), [SimpleNamespace(video=v) for v in ids], train)
    labels = [{a: ATTRIBUTES[a].index(meta[v]["scene"][a]) for a in ATTRIBUTES} for v in ids]
    return clips, labels


def pretrain_video_swin(
    cfg: Config,
    data: Path,
    out_dir: Path,
    steps: int = 600,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
) -> Path:
    """Train the config's Video Swin to classify the train videos' attributes; returns the weights file.

    AdamW at ``lr`` with 5 % warm-up and linear decay, batches of ``batch_size`` train-split clips (train
    transforms), fp32. Reuses ``out_dir`` when it holds a pretraining of the same request.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    weights, record = out_dir / WEIGHTS, out_dir / RECORD
    request = _request(cfg, data, steps, batch_size, lr, seed)
    if weights.is_file() and record.is_file():
        done = json.loads(record.read_text())
        if done.get("request") == request:
            print(f"      (reusing {weights}: {_accuracy_line(done['val_accuracy'])})", flush=True)
            return weights
    torch.manual_seed(seed)
    rng = random.Random(seed)
    swin = VideoEncoder(model_config(cfg)).swin.train()
    heads = torch.nn.ModuleDict(
        {a: torch.nn.Linear(swin.num_features, len(values)) for a, values in ATTRIBUTES.items()}
    )
    optimizer = torch.optim.AdamW([*swin.parameters(), *heads.parameters()], lr=lr)
    scheduler = build_scheduler(optimizer, steps, warmup_ratio=0.05)
    clips, labels = labelled_clips(cfg, data, "train", train=True)

    def logits(video: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = swin(normalize_frames(video).transpose(1, 2)).mean((1, 2, 3))
        return {a: head(pooled) for a, head in heads.items()}

    started = time.perf_counter()
    bar = tqdm(range(steps), desc="Video Swin pretraining", unit="step", leave=False)
    for _ in bar:
        picked = rng.sample(range(len(clips)), min(batch_size, len(clips)))
        out = logits(torch.stack([clips[i]["video"] for i in picked]))
        loss = sum(F.cross_entropy(out[a], torch.tensor([labels[i][a] for i in picked])) for a in ATTRIBUTES)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    seconds = time.perf_counter() - started
    accuracy = _held_out_accuracy(cfg, data, swin, logits)
    tmp = out_dir / (WEIGHTS + ".tmp")
    state = {SWIN_PREFIX + k: v.detach().contiguous() for k, v in swin.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(weights)
    write_json_atomic(
        record, {"request": request, "val_accuracy": accuracy, "seconds": round(seconds, 1)}, indent=2
    )
    print(f"      {steps} steps in {seconds:.0f} s; {_accuracy_line(accuracy)}", flush=True)
    return weights


def _held_out_accuracy(cfg: Config, data: Path, swin: torch.nn.Module, logits) -> dict[str, float]:
    """Accuracy per attribute on the val split (eval transforms)."""
    clips, labels = labelled_clips(cfg, data, "val", train=False)
    swin.eval()
    hits = dict.fromkeys(ATTRIBUTES, 0)
    with torch.no_grad():
        for start in range(0, len(clips), 32):
            rows = range(start, min(start + 32, len(clips)))
            out = logits(torch.stack([clips[i]["video"] for i in rows]))
            for a in ATTRIBUTES:
                predicted = out[a].argmax(-1).tolist()
                hits[a] += sum(p == labels[i][a] for p, i in zip(predicted, rows, strict=True))
    swin.train()
    return {a: round(h / len(clips), 4) for a, h in hits.items()}


def _accuracy_line(accuracy: dict[str, float]) -> str:
    return "held-out attribute accuracy " + ", ".join(f"{a} {v:.2f}" for a, v in accuracy.items())
