"""Write the synthetic demo dataset: videos/*.mp4, img_demo.tsv + .lineidx and the txt_demo-*.json files.

    python _tools/make_demo_data.py --output _datasets/demo --seed 0 [--n_train 600 --n_val 60 --n_test 60]
        [--size 64] [--fps 10] [--sample 5] [--workers N] [--force] [--no_extract]

Re-running reuses complete videos and a complete frame table; --force rebuilds everything.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.demo.synthetic import make_demo_dataset


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", required=True, help="dataset folder, e.g. _datasets/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n_train", type=int, default=600)
    parser.add_argument("--n_val", type=int, default=60)
    parser.add_argument("--n_test", type=int, default=60)
    parser.add_argument("--size", type=int, default=64, help="frame width = height in pixels (even, >= 32)")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--sample", type=int, default=5, help="frames per video stored in the TSV")
    parser.add_argument("--workers", type=int, default=1, help="processes for encoding and extraction")
    parser.add_argument(
        "--force", action="store_true", help="rebuild videos and frame table even if complete"
    )
    parser.add_argument("--no_extract", action="store_true", help="write videos and annotations only")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    start = time.perf_counter()
    demo = make_demo_dataset(
        args.output,
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        frame_size=args.size,
        fps=args.fps,
        sample=args.sample,
        workers=args.workers,
        force=args.force,
        progress=not args.quiet,
        extract=not args.no_extract,
    )
    print(f"demo dataset in {demo.output} ({time.perf_counter() - start:.1f} s)")
    print(f"  videos: {len(demo.video_paths)} in {demo.output / 'videos'} ({demo.n_encoded} encoded now)")
    if demo.tsv is not None:
        print(f"  frames: {demo.tsv} ({'extracted now' if demo.extracted else 'already complete'})")
    for path in demo.annotation_paths:
        print(f"  annotations: {path}")


if __name__ == "__main__":
    main()
