"""Extract N frames spread over each (long) video, with their times, into a frame TSV for long-form samples.

    python _tools/extract_long_video.py --path VIDEOS_DIR_OR_LIST --frames 64 --output _datasets/img_anet \
        --size_short 240

Rows: id, meta JSON (times, duration, fps, n_frames), N base64 JPEGs (lib/data/long_video.py); each frame
is decoded with seeks and JPEG-encoded at once, so memory does not grow with the video. Re-running the same
command resumes. Exit status: 0 when every video was extracted (or already was), 1 when some failed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.long_video import extract_long_videos
from lib.data.video import JPEG_QUALITY


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="folder of videos or a text file listing video paths")
    parser.add_argument("--frames", required=True, type=int, help="frames per video (N), spread evenly")
    parser.add_argument(
        "--output", required=True, help="output prefix: writes PREFIX.tsv, PREFIX.lineidx, ..."
    )
    parser.add_argument("--size_short", type=int, default=None, help="shorter side in pixels (default: keep)")
    parser.add_argument(
        "--quality", type=int, default=JPEG_QUALITY, help=f"JPEG quality (default {JPEG_QUALITY})"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    summary = extract_long_videos(
        args.path, args.frames, args.output, args.size_short, args.quality, progress=not args.quiet
    )
    print(f"{args.output}.tsv: {summary['counts']}")
    return 1 if summary["counts"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
