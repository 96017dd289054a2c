"""Remove test leaks for multi-task training: for each dataset family D, every video id in a val/test split of
any txt_D-*.json is dropped from the train split of every txt_D-*.json. New files go to --output_dir (the
originals are never edited); a JSON report of what was removed is written beside them.

    python _tools/multi_task_vid_filter.py --data_dir _datasets --output_dir _datasets/mt --dataset msrvtt
    python _tools/multi_task_vid_filter.py --data_dir _datasets --output_dir _datasets/mt --all --quiet
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.annotations import annotation_families, filter_test_leaks
from lib.utils.atomic import write_json

REPORT_NAME = "leak_filter_report.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data_dir", required=True, help="folder with the txt_D-*.json files")
    parser.add_argument("--output_dir", required=True, help="where the filtered copies go (not --data_dir)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", action="append", help="dataset family D (repeatable), e.g. msrvtt")
    which.add_argument(
        "--all", action="store_true", help="every family with txt_D-*.json files in --data_dir"
    )
    parser.add_argument("--quiet", action="store_true", help="print counts only, not the removed ids")
    args = parser.parse_args(argv)

    families = annotation_families(args.data_dir) if args.all else args.dataset
    if not families:
        parser.error(f"no txt_D-*.json files in {args.data_dir}")
    try:
        reports = [filter_test_leaks(args.data_dir, family, args.output_dir) for family in families]
    except (ValueError, FileNotFoundError) as e:  # AnnotationError is a ValueError
        sys.exit(f"error: {e}")
    for report in reports:
        print(
            f"{report.dataset}: {report.n_eval_ids} val/test videos, {report.n_removed} train items removed"
        )
        for f in report.files:
            print(
                f"  {Path(f.file).name}: train {f.train_before} -> {f.train_after} items, "
                f"{len(f.removed_ids)} videos removed -> {f.output}"
            )
            if f.removed_ids and not args.quiet:
                print(f"    removed: {' '.join(f.removed_ids)}")
    report = [r.to_json() for r in reports]
    path = write_json(Path(args.output_dir) / REPORT_NAME, report, ensure_ascii=False, indent=1)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
