"""Retrieval evaluation cost: our evaluation (each video encoded once, fusion batched over (text, video)
pairs) vs what a naive port does (encode the video again for every pair, one pair per fusion pass).

    python bench/retrieval.py [--n_test 24] [--size_img 64]

Same model, same data (a small demo dataset built in a temp folder with the real extractor), same run.
Prints pairs/s of both and checks that both give the same scores.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.annotations import caption_text  # noqa: E402
from lib.demo.synthetic import make_demo_dataset  # noqa: E402
from lib.engine.checkpointing import seed_everything  # noqa: E402
from lib.engine.config import load_config  # noqa: E402
from lib.model import layouts  # noqa: E402
from lib.tasks.build import build_model  # noqa: E402
from lib.tasks.common import clip_dataset, load_tokenizer  # noqa: E402
from lib.tasks.retrieval import RetrievalTask  # noqa: E402


def naive_scores(task: RetrievalTask, model, records) -> np.ndarray:
    """Every (text, video) pair on its own: load + encode the video, embed the text, fuse, score."""
    videos = list(dict.fromkeys(r.video for r in records))
    dataset = clip_dataset(task.cfg, task.store, records, train=False, videos_only=True)
    texts = [caption_text(r, False, None) for r in records]
    out = np.zeros((len(texts), len(videos)))
    score = layouts.true_false_ranker(task.cfg.tf_score)  # what the task ranks by
    for t, text in enumerate(texts):
        layout = layouts.vtm(task.tok, [text], task.cfg.size_txt)
        for v in range(len(videos)):
            feat, mask = model.encode_video(dataset[v]["video"][None])
            emb = model.embed_text(layout.ids, layout.mask)
            hidden = model.fuse(feat, mask, emb, layout.mask)
            logits = model.mlm_logits(hidden[0, layout.mask_pos[0]][None])
            out[t, v] = score(logits.float(), task.true_id, task.false_id).item()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_test", type=int, default=24)
    p.add_argument("--config", default="_args/args_demo_multi-task.json")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        make_demo_dataset(tmp, seed=0, n_train=8, n_val=4, n_test=args.n_test, progress=False)
        cfg = load_config(["--config", args.config, "--data_dir", tmp, "--type", "retrieval",
                           "--task", "demo-retrieval", "--datasets", "[]", "--n_workers", "0"])  # fmt: skip
        tok = load_tokenizer(cfg.txt_backbone)
        seed_everything(0)
        model = build_model(cfg, tok).eval()
        task = RetrievalTask(cfg, tok)
        records = task.ann["test"]
        n_pairs = len(records) * len({r.video for r in records})

        start = time.perf_counter()
        videos, feats, masks = task.encode_videos(model, records)
        texts = [caption_text(r, False, None) for r in records]
        ours = np.concatenate([task.score_pairs(model, texts[i : i + 16], feats, masks)
                               for i in range(0, len(texts), 16)])  # fmt: skip
        t_ours = time.perf_counter() - start

        start = time.perf_counter()
        naive = naive_scores(task, model, records)
        t_naive = time.perf_counter() - start

    print(f"command: python bench/retrieval.py --n_test {args.n_test}")
    print(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, no GPU used")  # fmt: skip
    geometry = f"{cfg.size_frame} frames, {cfg.size_img} px, {model.config.num_layers} fusion layers"
    print(f"model: {args.config} ({geometry}), {len(records)} texts x {len(videos)} videos\n")
    print("| evaluation | pairs | seconds | pairs/s | ms/pair |")
    print("|---|---:|---:|---:|---:|")
    for name, t in (("naive: re-encode the video for every pair", t_naive),
                    ("ours: each video once, batched pairs", t_ours)):  # fmt: skip
        print(f"| {name} | {n_pairs} | {t:.2f} | {n_pairs / t:.1f} | {1000 * t / n_pairs:.2f} |")
    print(f"\nspeed-up: {t_naive / t_ours:.1f}x; max |score difference| = {np.abs(ours - naive).max():.2e}")


if __name__ == "__main__":
    main()
