"""Two-stage retrieval against the full cross-encoder ranking, on one checkpoint with a contrastive head.

    python bench/retrieval_fast.py --ckpt _snapshot/demo_vtc/run/model                  # demo test split
    python bench/retrieval_fast.py --ckpt _snapshot/demo_vtc/run/model --gallery 1000   # + 1,000 videos

For each split it evaluates the retrieval task of the checkpoint's run three ways with the task's own
evaluation (lib.tasks.retrieval): ``full`` (every caption x every video through the fusion encoder, the
LAVENDER protocol), ``dual`` (dot products of the contrastive embeddings, no fusion pass) and ``rerank``
(each caption's top k videos by dot product re-scored by the matching head; k = 10 % of the demo's 60 test
videos, and 16 on the gallery). It prints a table: text->video R@1/5/10, median rank, the fusion passes the
text->video ranking needed and the wall time of each mode (video encoding included), same process, same
machine. ``--gallery N`` builds N more videos with the demo's generator (another data seed, unseen videos, one
caption each) and ranks N captions against N videos. A final table compares the shortlist index (exact torch
matrix products vs faiss's exact IndexFlatIP) on random embeddings of growing galleries.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.demo.synthetic import make_demo_dataset  # noqa: E402
from lib.engine.config import load_config  # noqa: E402
from lib.model.shortlist import faiss_available, top_k  # noqa: E402
from lib.tasks.checkpoint_folder import find_tokenizer, load_weights  # noqa: E402
from lib.tasks.retrieval import RetrievalTask  # noqa: E402

KEYS = ("t2v_R1", "t2v_R5", "t2v_R10", "t2v_MedR")


def gallery_data(folder: Path, n: int, seed: int) -> Path:
    """``n`` unseen demo videos (train-split scenes of another seed) and one caption each, as a test split."""
    made = make_demo_dataset(folder, seed=seed, n_train=n, n_val=0, n_test=0, workers=2, progress=False)
    source = json.loads((made.output / "txt_demo-retrieval.json").read_text())
    first: dict[str, str] = {}
    for item in source["train"]:
        first.setdefault(item["video"], item["caption"])
    test = [{"video": v, "caption": c} for v, c in first.items()]
    (folder / "txt_gallery-retrieval.json").write_text(json.dumps({"test": test}))
    return folder


def evaluate(task: RetrievalTask, model, mode: str, k: int) -> dict[str, float]:
    task.cfg = task.cfg.override({"retrieval_mode": mode, "rerank_k": k})
    task._predictor = None
    started = time.perf_counter()
    with torch.no_grad():
        metrics = task.evaluate(model, "test")
    metrics["wall_s"] = time.perf_counter() - started
    n_texts, n_videos = metrics["n_texts"], metrics["n_videos"]
    passes = {"full": n_texts * n_videos, "dual": 0, "rerank": n_texts * min(k, n_videos)}
    metrics["t2v_fusion_pairs"] = passes[mode]
    return metrics


def compare(task: RetrievalTask, model, k: int, label: str) -> list[dict]:
    rows = []
    for mode in ("full", "dual", "rerank"):
        m = evaluate(task, model, mode, k)
        rows.append({"split": label, "mode": mode if mode != "rerank" else f"rerank k={k}", **m})
    full = rows[0]
    print(f"\n{label}: {int(full['n_texts'])} captions x {int(full['n_videos'])} videos")
    print(
        "| mode | t2v R@1 | R@5 | R@10 | MdR | t2v fusion passes | wall s | passes vs full | time vs full |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        pairs = r["t2v_fusion_pairs"]
        passes = full["t2v_fusion_pairs"] / pairs if pairs else float("inf")
        print(
            f"| {r['mode']} | {r['t2v_R1']:.1f} | {r['t2v_R5']:.1f} | {r['t2v_R10']:.1f} "
            f"| {r['t2v_MedR']:.1f} | {int(pairs):,} | {r['wall_s']:.1f} | {passes:.0f}x "
            f"| {full['wall_s'] / r['wall_s']:.1f}x |"
        )
    return rows


def shortlist_index_table(queries: int = 1000, dim: int = 256, k: int = 16) -> None:
    print(f"\nshortlist index: {queries} queries, top {k}, {dim}-d, exact search")
    print("| gallery | torch ms | faiss IndexFlatIP ms | same sets |")
    print("|---:|---:|---:|---|")
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(queries, dim, generator=g), dim=-1)
    for n in (1_000, 10_000, 100_000):
        gallery = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=-1)
        started = time.perf_counter()
        a = top_k(q, gallery, k, "torch")
        t_torch = time.perf_counter() - started
        if faiss_available():
            started = time.perf_counter()
            b = top_k(q, gallery, k, "faiss")
            t_faiss = time.perf_counter() - started
            same = np.mean([set(x) == set(y) for x, y in zip(a[0], b[0])])
            print(f"| {n:,} | {1000 * t_torch:.0f} | {1000 * t_faiss:.0f} | {same:.0%} |")
        else:
            print(f"| {n:,} | {1000 * t_torch:.0f} | (faiss-cpu not installed) | |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", help="a checkpoint folder with a contrastive head, args.json beside")
    p.add_argument("--gallery", type=int, default=0, help="also rank N captions against N unseen demo videos")
    p.add_argument("--gallery_dir", default="_datasets/demo_gallery", help="where the gallery videos go")
    p.add_argument("--k", type=int, default=16, help="rerank k on the gallery")
    p.add_argument("--out", default="", help="write every row as JSON here")
    p.add_argument("--index_only", action="store_true", help="only the shortlist-index table (no checkpoint)")
    args = p.parse_args()
    if args.index_only or not args.ckpt:
        shortlist_index_table()
        return
    ckpt = Path(args.ckpt)
    model = load_weights(ckpt, None).eval()
    run_args = json.loads((ckpt.parent / "args.json").read_text())
    entry = next(e for e in run_args["datasets"] if e["type"] == "retrieval")
    argv = ["--config", str(ckpt.parent / "args.json"), "--type", "retrieval", "--task", entry["task"]]
    argv += ["--n_workers", "0", "--size_batch", "32", "--path_output", str(ckpt.parent / "bench_retrieval")]
    cfg = load_config(argv).override({k: v for k, v in entry.items() if k not in ("type", "task")})
    cfg = cfg.override({"contrastive_dim": model.config.contrastive_dim, "datasets": []})
    tok = find_tokenizer(ckpt, None, None)
    rows = compare(RetrievalTask(cfg, tok), model, max(1, 60 // 10), "demo test split")
    if args.gallery:
        folder = gallery_data(Path(args.gallery_dir), args.gallery, seed=1000)
        gallery_cfg = cfg.override({"data_dir": str(folder), "task": "gallery-retrieval"})
        rows += compare(RetrievalTask(gallery_cfg, tok), model, args.k, f"{args.gallery}-video gallery")
    shortlist_index_table()
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
