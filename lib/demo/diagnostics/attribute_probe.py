"""How fast the demo's Video Swin, trained from scratch, learns one visual attribute when supervised directly.

A diagnostic for the demo (python -m lib.demo): the demo config's Swin (`_args/args_demo_multi-task.json`)
with a linear classifier on one attribute of the demo videos (color, size, count, shape, direction), AdamW
at a constant learning rate, batches of 16 training clips; validation accuracy on held-out clips every
``--every`` steps. ``--through`` picks what the classifier reads, mean-pooled over the video's tokens:

  swin    the Swin's output features
  tokens  the model's video tokens (Swin -> fc -> [CLS]/position/frame embeddings -> LayerNorm)
  fusion  those tokens after the fusion encoder's BERT layers (all-MiniLM-L6-v2's first ``fusion_layers``,
          as the demo builds them; ``--fusion_encoder_rand_init true`` starts them random), trained at
          ``--fusion_lr``

The multi-task demo gets its signal only through the fusion encoder, so an attribute that ``fusion`` does not
learn here is out of the demo's reach.

    .venv/bin/python -m lib.demo.diagnostics.attribute_probe --attribute shape [--through swin] [--steps 400]
        [--data _datasets/demo] [--key value ...]   (demo-config overrides, e.g. --vis_drop_path 0.2)
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

from lib.data.frames import normalize_frames
from lib.demo.diagnostics import command_line
from lib.demo.synthetic import ATTRIBUTES, make_demo_dataset
from lib.engine.config import load_config
from lib.tasks.build import build_model
from lib.tasks.common import clip_dataset, open_store

REPO = Path(__file__).resolve().parents[3]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attribute", choices=list(ATTRIBUTES), default="shape")
    p.add_argument("--data", type=Path, default=REPO / "_datasets" / "demo", help="built if missing")
    p.add_argument("--through", choices=("swin", "tokens", "fusion"), default="swin")
    p.add_argument("--fusion_lr", type=float, default=2e-4, help="lr of the fusion layers (--through fusion)")
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
    model = build_model(cfg).train()
    video_encoder, fusion = model.enc_img, model.trsfr
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
    width = video_encoder.swin.num_features if args.through == "swin" else model.config.hidden_size
    head = torch.nn.Linear(width, len(values))
    trained = video_encoder.swin if args.through == "swin" else video_encoder
    groups = [{"params": [*trained.parameters(), *head.parameters()], "lr": args.lr}]
    if args.through == "fusion":
        groups.append({"params": list(fusion.parameters()), "lr": args.fusion_lr})
    opt = torch.optim.AdamW(groups, lr=args.lr)

    def pooled(video: torch.Tensor) -> torch.Tensor:
        if args.through == "swin":
            return video_encoder.swin(video.transpose(1, 2)).mean((1, 2, 3))
        tokens, mask = video_encoder(video)
        if args.through == "fusion":
            tokens = fusion(tokens, mask[:, None, None, :])
        return tokens.mean(1)

    rng = random.Random(args.seed)

    def forward(batch):
        video = normalize_frames(torch.stack([c for c, _ in batch]))
        labels = torch.tensor([y for _, y in batch])
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            return head(pooled(video)).float(), labels

    print(f"command: {command_line(__spec__.name)}")
    print(
        f"attribute {args.attribute} ({len(values)} values, chance {1 / len(values):.2f}); {len(train)} train"
        f" / {len(val)} val clips; through {args.through}; lr {args.lr}; bf16 {args.bf16}; "
        f"config overrides {overrides}\n"
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
            model.eval()
            with torch.no_grad():
                logits, labels = forward(val)
            model.train()
            acc = (logits.argmax(-1) == labels).float().mean().item()
            print(
                f"| {step} | {loss.item():.3f} | {acc:.2f} | {time.perf_counter() - started:.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
