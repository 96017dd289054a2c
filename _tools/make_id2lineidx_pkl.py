"""Write img_X.id2lineidx.pkl ({Path(video_id).stem: byte offset of its row}) for a frame TSV, decoding the
first frame of every row as a sanity check (a bad row stops the tool and is named).

    python _tools/make_id2lineidx_pkl.py --tsv _datasets/img_msrvtt.tsv
    (writes _datasets/img_msrvtt.id2lineidx.pkl; a missing .lineidx is built first)
    python _tools/make_id2lineidx_pkl.py --input_file X.tsv --output_file X.id2lineidx.pkl   # the reference's
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.tsv import TSVError, TSVFile, id2lineidx_path, save_id2lineidx
from lib.data.tsv_check import build_id2lineidx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tsv", "--input_file", required=True, help="the frame TSV (X.tsv)")
    parser.add_argument(
        "--output", "--output_file", help="output pickle (default: X.id2lineidx.pkl beside X.tsv)"
    )
    parser.add_argument("--no_check", action="store_true", help="skip decoding each row's first frame")
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else id2lineidx_path(args.tsv)
    try:
        with TSVFile(args.tsv) as tsv:
            mapping = build_id2lineidx(tsv, check_first_frame=not args.no_check)
        save_id2lineidx(mapping, output)
    except (OSError, TSVError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{output}: {len(mapping)} ids")
    return 0


if __name__ == "__main__":
    sys.exit(main())
