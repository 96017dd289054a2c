"""The one-sequence multiple-choice questions a trained demo model gets wrong, and how they differ.

Puts every test question of ``txt_demo-mc.json`` to ``Lavender.answer`` with its five options and prints, for
each wrong one, the right option, the chosen one and the option probabilities; then a summary: how many
wrong, which option positions were chosen, and how often the chosen caption shares each attribute word
(count, size, colour, shape, direction) with the right one.

    .venv/bin/python bench/mc_errors.py --run _snapshot/demo/run --data _datasets/demo
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.api import Lavender  # noqa: E402
from lib.data.frames import decode_jpeg  # noqa: E402
from lib.data.tsv import TSVFile, frame_columns  # noqa: E402

N_OPTIONS = 5
# demo captions read "<count> <size> <colour> <shape>s <direction…>" (lib.data.synthetic)
PARTS = ("count", "size", "colour", "shape")


def singular(noun: str) -> str:
    if noun.endswith("sses"):
        return noun[:-2]
    return noun[:-1] if noun.endswith("s") and not noun.endswith("ss") else noun


def attributes(caption: str) -> dict[str, str]:
    """The attribute words of a demo caption (the shape without its plural ending)."""
    words = caption.split()
    parts = dict(zip(PARTS, words[:4]))
    parts["shape"] = singular(parts.get("shape", ""))
    parts["direction"] = words[-1]
    return parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo run folder (holds model/)")
    parser.add_argument("--data", type=Path, required=True, help="its dataset folder")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    model = Lavender.from_pretrained(args.run / "model")
    questions = json.loads((args.data / "txt_demo-mc.json").read_text())[args.split]
    tsv = TSVFile(args.data / "img_demo.tsv")
    wrong, chosen_at, same = 0, Counter(), Counter()
    for q in questions:
        frames = [decode_jpeg(b) for b in frame_columns(tsv.row(tsv.index_of(q["video"])))]
        options = [q[f"option_{k}"] for k in range(N_OPTIONS)]
        result = model.answer(frames, q["question"], options, task="demo-mc", with_scores=True)
        if result["index"] == q["answer"]:
            continue
        wrong += 1
        chosen_at[result["index"]] += 1
        right, picked = attributes(options[q["answer"]]), attributes(options[result["index"]])
        same.update(k for k in right if right[k] == picked.get(k))
        scores = " ".join(f"{float(s):.2f}" for s in result["scores"])
        print(f"{q['video']}: right “{options[q['answer']]}”, chose “{options[result['index']]}” [{scores}]")
    print(f"\n{wrong} of {len(questions)} wrong; chosen option positions {dict(sorted(chosen_at.items()))}")
    if wrong:
        shared = ", ".join(f"{k} {same[k]}/{wrong}" for k in (*PARTS, "direction"))
        print(f"the chosen caption shares with the right one: {shared}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
