"""Check a frame TSV: rows, duplicate ids (readers use the first), rows with fewer frames than most rows (a
TSV cut between frames), a missing final newline (a file cut short), bad .lineidx offsets and (with --decode)
frames that do not decode or that libjpeg reports as corrupt ("Corrupt JPEG data: ..."). Prints a report
(JSON with --json). Writes nothing.

Exit status: 0 = no problem, 1 = problems found (each named with its row), 2 = the file cannot be read.

    python _tools/check_tsv.py _datasets/img_msrvtt.tsv --decode
    python _tools/check_tsv.py webvid2.5m_train_0.tsv --json > report.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.tsv import TSVError
from lib.data.tsv_check import inspect_tsv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tsv", help="the .tsv file")
    parser.add_argument("--decode", action="store_true", help="decode every frame (slower, finds bad JPEGs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--lineidx", help="index to check (default: X.lineidx or X.lineidx.8b beside X.tsv)")
    args = parser.parse_args(argv)
    try:
        report = inspect_tsv(args.tsv, decode=args.decode, lineidx=args.lineidx)
    except (OSError, TSVError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
