"""Draw the frames of one TSV row as a PNG grid with the row's id on top (written atomically).

python _tools/visualize_frame_tsv.py --tsv _datasets/img_msrvtt.tsv --id video7010 --output grid.png
python _tools/visualize_frame_tsv.py --tsv webvid2.5m_train_0.tsv --row 0 --output grid.png

Without --output, the reference's command works as written: every frame of the rows that start at the
reference's byte offsets (0, 11429530, 23741208; the first row at least), or of --row / --id, is written as
./_prepro/debug/{id}_{k}.jpg:

python _tools/visualize_frame_tsv.py --input_file _datasets/img_msrvtt.tsv
"""

import argparse
import base64
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.frames import decode_jpeg, render_frame_grid, save_png
from lib.data.tsv import TSVError, TSVFile, frame_columns
from lib.utils.atomic import write_bytes

REFERENCE_OFFSETS = (0, 11429530, 23741208)  # the rows the reference's script looked at
REFERENCE_FOLDER = Path("_prepro/debug")


def decoded_frames(tsv: TSVFile, i: int, frame_col: int | None) -> tuple[str, list[bytes], list]:
    """Row ``i``'s id, base64 frames and decoded frames (a bad frame is a TSVError naming row and frame)."""
    key, columns = tsv.key(i), frame_columns(tsv.row(i), frame_col)
    frames = []
    for j, b64 in enumerate(columns):
        try:
            frames.append(decode_jpeg(b64))
        except ValueError as e:
            raise TSVError(f"{tsv.path} row {i} (id {key!r}) frame {j}: {e}") from None
    return key, columns, frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tsv", "--input_file", required=True, help="the frame TSV")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--row", type=int, help="row number (0-based; negative counts from the end)")
    which.add_argument("--id", help="video id (column 0)")
    parser.add_argument(
        "--output", help=f"PNG file to write (default: the reference's {REFERENCE_FOLDER}/ID_K.jpg files)"
    )
    parser.add_argument("--columns", type=int, default=5, help="frames per grid line (default 5)")
    parser.add_argument("--frame_col", type=int, help="first frame column (default: detected)")
    args = parser.parse_args(argv)
    if args.output and args.row is None and args.id is None:
        parser.error("--output draws one row: give --row or --id")
    try:
        with TSVFile(args.tsv) as tsv:
            if args.row is not None or args.id is not None:
                rows = [args.row if args.row is not None else tsv.index_of(args.id)]
            else:
                starts = set(int(o) for o in tsv.offsets)
                rows = [tsv.index_of_offset(o) for o in REFERENCE_OFFSETS if o in starts]
            drawn = [(i, *decoded_frames(tsv, i, args.frame_col)) for i in rows]
            n_rows = len(tsv)
        if args.output:
            i, key, _, frames = drawn[0]
            save_png(
                args.output, render_frame_grid(frames, f"{key}  (row {i % n_rows}, {len(frames)} frames)")
            )
            print(f"{args.output}: {len(frames)} frames of {key}")
            return 0
        for i, key, columns, _ in drawn:
            for k, b64 in enumerate(columns):
                write_bytes(REFERENCE_FOLDER / f"{key}_{k}.jpg", base64.b64decode(b64))
            print(f"{REFERENCE_FOLDER}/{key}_0..{len(columns) - 1}.jpg: the frames of row {i} ({key})")
    except (OSError, TSVError, IndexError, KeyError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
