"""The one-sequence multiple-choice questions a trained demo model gets wrong, and how they differ.

Puts every test question of ``txt_demo-mc.json`` to ``Lavender.answer`` with its five options and prints, for
each wrong one, the right option, the chosen one and the option probabilities; then a summary: how many
wrong, which option positions were chosen, and how often the chosen caption shares each attribute word
(count, size, colour, shape, direction) with the right one.

    .venv/bin/python -m lib.demo.diagnostics.mc_errors --run _snapshot/demo/run --data _datasets/demo \\
        [--shifts 5]

``--shifts N`` re-scores with N cyclic shifts of the option order (``mc_shifts``; default: the checkpoint's),
e.g. to compare a checkpoint trained before ``mc_shifts`` existed with and without them.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from lib.api import Lavender
from lib.data.annotations import load_annotations
from lib.data.tsv import TSVFile, frame_columns
from lib.demo.synthetic import PLURALS

# demo captions read "<count> <size> <colour> <shape(s)> <verb> <direction>" (lib.demo.synthetic)
PARTS = ("count", "size", "colour", "shape", "direction")
SINGULAR = {plural: shape for shape, plural in PLURALS.items()}


def attributes(caption: str) -> dict[str, str]:
    """The attribute words of a demo caption (the shape in the singular)."""
    words = caption.split()
    count, size, colour, shape = words[:4]
    return dict(zip(PARTS, (count, size, colour, SINGULAR.get(shape, shape), words[-1])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a demo run folder (holds model/)")
    parser.add_argument("--data", type=Path, required=True, help="its dataset folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--shifts", type=int, default=None, help="cyclic shifts of the option order")
    args = parser.parse_args()
    model = Lavender.from_pretrained(args.run / "model")
    entry = next(e for e in model.settings["tasks"]["qa_choice"] if e["name"] == "demo-mc")
    if args.shifts is not None:
        entry["shifts"] = args.shifts
    questions = load_annotations(args.data / "txt_demo-mc.json", "qa_choice", splits=[args.split])[args.split]
    tsv = TSVFile(args.data / "img_demo.tsv")
    videos = [frame_columns(tsv.row(tsv.index_of(q.video))) for q in questions]
    results = model.answer(
        videos,
        [q.question for q in questions],
        [list(q.options) for q in questions],
        task="demo-mc",
        with_scores=True,
    )
    wrong, chosen_at, same = 0, Counter(), Counter()
    for q, result in zip(questions, results):
        if result["index"] == q.answer:
            continue
        wrong += 1
        chosen_at[result["index"]] += 1
        right, picked = attributes(q.options[q.answer]), attributes(q.options[result["index"]])
        same.update(k for k in PARTS if right[k] == picked[k])
        scores = " ".join(f"{float(s):.2f}" for s in result["scores"])
        print(f"{q.video}: right “{q.options[q.answer]}”, chose “{q.options[result['index']]}” [{scores}]")
    accuracy = 1 - wrong / len(questions)
    print(f"\naccuracy {accuracy:.3f} with {entry.get('shifts', 1)} shift(s) of the option order")
    print(f"{wrong} of {len(questions)} wrong; chosen option positions {dict(sorted(chosen_at.items()))}")
    if wrong:
        shared = ", ".join(f"{k} {same[k]}/{wrong}" for k in PARTS)
        print(f"the chosen caption shares with the right one: {shared}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
