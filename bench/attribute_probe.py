"""How fast the demo's Video Swin, trained from scratch, learns one visual attribute when supervised directly.

A diagnostic for the demo (python -m lib.demo): the demo config's Swin (`_args/args_demo_multi-task.json`),
mean-pooled, with a linear classifier on one attribute of the demo videos (color, size, count, shape,
direction), AdamW at a constant learning rate, batches of 16 training clips; validation accuracy on held-out
clips every ``--every`` steps. The multi-task demo gets this signal only through the fusion encoder and a
fraction of its steps, so an attribute that is slow here is slower there.

    .venv/bin/python bench/attribute_probe.py --attribute shape [--steps 400] [--data _datasets/demo]
        [--key value ...]   (demo-config overrides, e.g. --vis_drop_path 0.2)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.data.frames import normalize_frames  # noqa: E402
from lib.data.synthetic import ATTRIBUTES, make_demo_dataset  # noqa: E402
from lib.engine.config import load_config  # noqa: E402
from lib.model.lavender import VideoEncoder  # noqa: E402
from lib.tasks.common import clip_dataset, open_store  # noqa: E402
from lib.tasks.model_io import model_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attribute", choices=list(ATTRIBUTES), default="shape")
    p.add_argument("--data", type=Path, default=REPO / "_datasets" / "demo", help="built if missing")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--n_train", type=int, default=500, help="training clips (the rest of the train split: val)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast, as the demo config trains")
    args, overrides = p.parse_known_args(argv)  # the rest: --key value pairs for the demo config
    if not (args.data / "meta_demo.json").is_file():
        make_demo_dataset(args.data, seed=0, workers=2)
    config = str(REPO / "_args/args_demo_multi-task.json")
    cfg = load_config(["--config", config, "--data_dir", str(args.data), *overrides])
    torch.manual_seed(args.seed)
    swin = VideoEncoder(model_config(cfg)).swin.train()
    meta = json.loads((args.data / "meta_demo.json").read_text())["videos"]
    train_ids = sorted(v for v, m in meta.items() if m["split"] == "train")
    values = sorted({str(m["scene"][args.attribute]) for m in meta.values()})
    records = [SimpleNamespace(video=v) for v in train_ids]
    clips = clip_dataset(cfg, open_store(cfg, cfg.dataset), records, train=False)
    data = [
        (clips[i]["video"], values.index(str(meta[v]["scene"][args.attribute])))
        for i, v in enumerate(train_ids)
    ]
    train, val = data[: args.n_train], data[args.n_train :]
    head = torch.nn.Linear(swin.num_features, len(values))
    opt = torch.optim.AdamW([*swin.parameters(), *head.parameters()], lr=args.lr)
    rng = random.Random(args.seed)

    def forward(batch):
        video = normalize_frames(torch.stack([c for c, _ in batch]))
        labels = torch.tensor([y for _, y in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            return head(swin(video.transpose(1, 2)).mean((1, 2, 3))).float(), labels

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"attribute {args.attribute} ({len(values)} values, chance {1 / len(values):.2f}); {len(train)} train"
        f" / {len(val)} val clips; lr {args.lr}; bf16 {args.bf16}; config overrides {overrides}\n"
    )
    print("| step | train loss | val accuracy | seconds |\n|---:|---:|---:|---:|")
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        logits, labels = forward(rng.sample(train, 16))
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.every == 0:
            swin.eval()
            with torch.no_grad():
                logits, labels = forward(val)
            swin.train()
            acc = (logits.argmax(-1) == labels).float().mean().item()
            print(
                f"| {step} | {loss.item():.3f} | {acc:.2f} | {time.perf_counter() - started:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
