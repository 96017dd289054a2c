"""Convert the reference extractor's pickle ({video_id: [base64 JPEG, ...]}, str or bytes) into a frame TSV.

Writes PREFIX.tsv + PREFIX.lineidx (rows: id, frames; in the pickle's order) through the crash-safe writer:
the files appear only when complete; --resume continues an interrupted run.

    python _tools/extract_tsv.py --pkl _datasets/msrvtt.pkl --output _datasets/img_msrvtt
    python extract_tsv.py --path=msrvtt      # the reference's command: msrvtt.pkl -> msrvtt.tsv + .lineidx
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.tsv import TSVError, TSVWriter, load_frame_pickle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pkl", help="input pickle {video_id: [base64 JPEG, ...]}")
    parser.add_argument("--output", help="output prefix (writes PREFIX.tsv, PREFIX.lineidx)")
    parser.add_argument(
        "--path", help="the reference's NAME: --pkl NAME.pkl --output NAME (each unless given)"
    )
    parser.add_argument("--resume", action="store_true", help="continue PREFIX.tsv.inprogress if present")
    args = parser.parse_args(argv)
    if args.path:
        args.pkl = args.pkl or f"{args.path}.pkl"
        args.output = args.output or args.path
    if not (args.pkl and args.output):
        parser.error("give --pkl and --output, or the reference's --path NAME")
    try:
        videos = load_frame_pickle(args.pkl)
        with TSVWriter(args.output, resume=args.resume) as writer:
            done = writer.keys_written()
            for video_id, frames in videos.items():
                if video_id not in done:
                    writer.write([video_id, *frames])
    except (OSError, TSVError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{writer.tsv_path}: {len(writer)} rows (+ {writer.lineidx_path.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
