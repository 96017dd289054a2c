"""Which attributes a demo checkpoint's video features still hold: a frozen linear probe per attribute.

Encodes the first ``--n_clips`` train videos of a demo dataset with a checkpoint's Video Swin (eval crops,
no gradients), mean-pools the Swin's features and, separately, the model's video tokens, and fits a linear
classifier per attribute on 3/4 of the clips (Adam, full batch, standardised features); prints the accuracy
on the other quarter. Comparing the attribute-pretrained Swin (``DIR/backbone/swin.safetensors``) with the
multi-task checkpoint trained from it shows what the multi-task run kept and what it eroded.

    .venv/bin/python -m lib.demo.diagnostics.feature_probe --run DIR/run --data _datasets/demo_seed4 \\
        [--ckpt DIR/backbone/swin.safetensors] [--attributes direction shape]

``--run`` gives the model's config (``RUN/model/args.json``) and, without ``--ckpt``, its weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open

from lib.data.frames import normalize_frames
from lib.demo.backbone import labelled_clips
from lib.demo.diagnostics import command_line
from lib.demo.synthetic import ATTRIBUTES
from lib.engine.config import load_config
from lib.tasks.build import build_model


def encode(
    run: Path, data: Path, ckpt: Path, n_clips: int
) -> tuple[dict[str, torch.Tensor], list[dict[str, int]]]:
    """Mean-pooled Swin features and video tokens of the first `n_clips` train videos, and their labels."""
    with safe_open(str(ckpt), "pt") as f:  # a Swin alone (the attribute pretraining's) or a whole model
        swin_only = all(k.startswith("enc_img.swin.") for k in f)
    weights = ["--vis_backbone_init", "3d", "--vis_backbone_ckpt"] if swin_only else ["--path_ckpt"]
    cfg = load_config(
        ["--config", str(run / "model" / "args.json"), "--data_dir", str(data), *weights, str(ckpt)]
    )
    model = build_model(cfg).eval()
    clips, labels = labelled_clips(cfg, data, "train", train=False)
    n = min(n_clips, len(labels))
    swin, tokens = [], []
    with torch.no_grad():
        for start in range(0, n, 50):
            video = normalize_frames(
                torch.stack([clips[i]["video"] for i in range(start, min(start + 50, n))])
            )
            swin.append(model.enc_img.swin(video.transpose(1, 2)).float().mean((1, 2, 3)))
            tokens.append(model.enc_img(video)[0].float().mean(1))
    return {"swin": torch.cat(swin), "tokens": torch.cat(tokens)}, labels[:n]


def probe(features: torch.Tensor, labels: torch.Tensor, n_classes: int, steps: int = 500) -> float:
    """Held-out accuracy of a linear classifier fitted on the first 3/4 of the (standardised) features."""
    x = (features - features.mean(0)) / (features.std(0) + 1e-6)
    cut = len(x) * 3 // 4
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], n_classes)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(steps):
        loss = F.cross_entropy(head(x[:cut]), labels[:cut])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (head(x[cut:]).argmax(-1) == labels[cut:]).float().mean().item()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a demo run folder (holding model/)")
    p.add_argument("--data", type=Path, required=True, help="the demo dataset it was trained on")
    p.add_argument("--ckpt", type=Path, default=None, help="weights to probe (default: RUN/model)")
    p.add_argument("--attributes", nargs="+", choices=list(ATTRIBUTES), default=list(ATTRIBUTES))
    p.add_argument("--n_clips", type=int, default=600)
    args = p.parse_args(argv)
    ckpt = args.ckpt or args.run / "model" / "model.safetensors"
    features, labels = encode(args.run, args.data, ckpt, args.n_clips)
    print(f"command: {command_line(__spec__.name)}\nweights: {ckpt}; {len(labels)} clips\n")
    print("| attribute | classes | chance | Swin features | video tokens |\n|---|---:|---:|---:|---:|")
    for attribute in args.attributes:
        n_classes = len(ATTRIBUTES[attribute])
        y = torch.tensor([row[attribute] for row in labels])
        accs = [probe(features[k], y, n_classes) for k in ("swin", "tokens")]
        print(f"| {attribute} | {n_classes} | {1 / n_classes:.2f} | {accs[0]:.2f} | {accs[1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
