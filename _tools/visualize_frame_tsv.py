"""Draw the frames of one TSV row as a PNG grid with the row's id on top (written atomically).

python _tools/visualize_frame_tsv.py --tsv _datasets/img_msrvtt.tsv --id video7010 --output grid.png
python _tools/visualize_frame_tsv.py --tsv webvid2.5m_train_0.tsv --row 0 --output grid.png
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.frames import decode_jpeg, render_frame_grid, save_png
from lib.data.tsv import TSVError, TSVFile, frame_columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tsv", required=True, help="the frame TSV")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--row", type=int, help="row number (0-based; negative counts from the end)")
    which.add_argument("--id", help="video id (column 0)")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--columns", type=int, default=5, help="frames per grid line (default 5)")
    parser.add_argument("--frame_col", type=int, help="first frame column (default: detected)")
    args = parser.parse_args(argv)
    try:
        with TSVFile(args.tsv) as tsv:
            i = args.row if args.row is not None else tsv.index_of(args.id)
            key, row = tsv.key(i), tsv.row(i)
        columns = frame_columns(row, args.frame_col)
        frames = []
        for j, b64 in enumerate(columns):
            try:
                frames.append(decode_jpeg(b64))
            except ValueError as e:
                raise TSVError(f"{args.tsv} row {i} (id {key!r}) frame {j}: {e}") from None
        save_png(args.output, render_frame_grid(frames, f"{key}  (row {i % len(tsv)}, {len(frames)} frames)"))
    except (OSError, TSVError, IndexError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    print(f"{args.output}: {len(frames)} frames of {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
