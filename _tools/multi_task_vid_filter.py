"""Remove test leaks for multi-task training: for each dataset family D, every video id in a val/test split of
any txt_D-*.json (and, for msrvtt / msvd, of SwinBERT's MSRVTT-v2|MSVD/{val,test}.caption_coco_format.json) is
dropped from the train split of every txt_D-*.json; so are train items whose video has no frames (not a key of
img_D.id2lineidx.pkl, or of img_D.tsv without one), counted apart. New files go to --output_dir (the
originals are never edited); a JSON report of what was removed is written beside them.

    python _tools/multi_task_vid_filter.py --data_dir _datasets --output_dir _datasets/mt --dataset msrvtt
    python _tools/multi_task_vid_filter.py --data_dir _datasets --output_dir _datasets/mt --all --quiet
    python _tools/multi_task_vid_filter.py --dataset msrvtt        # the reference's command and defaults:
                                  # --data_root ./_datasets/ --output_folder ./_datasets/multi_task/
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
    parser.add_argument(
        "--data_dir", "--data_root", default="./_datasets/",
        help="folder with the txt_D-*.json files (default ./_datasets/, the reference's --data_root)",
    )  # fmt: skip
    parser.add_argument(
        "--output_dir", "--output_folder", default="./_datasets/multi_task/",
        help="where the filtered copies go, not --data_dir (default ./_datasets/multi_task/, the reference's "
        "--output_folder)",
    )  # fmt: skip
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dataset", action="append", help="dataset family D (repeatable), e.g. msrvtt")
    which.add_argument(
        "--all", action="store_true", help="every family with txt_D-*.json files in --data_dir"
    )
    parser.add_argument("--quiet", action="store_true", help="print counts only, not the removed ids")
    parser.add_argument(
        "--keep_frameless", action="store_true", help="keep train items whose video has no frames"
    )
    args = parser.parse_args(argv)

    families = annotation_families(args.data_dir) if args.all else args.dataset
    if not families:
        parser.error(f"no txt_D-*.json files in {args.data_dir}")
    try:
        reports = [
            filter_test_leaks(args.data_dir, family, args.output_dir, check_frames=not args.keep_frameless)
            for family in families
        ]
    except (ValueError, FileNotFoundError) as e:  # AnnotationError and TSVError are ValueErrors
        sys.exit(f"error: {e}")
    for report in reports:
        print(
            f"{report.dataset}: {report.n_eval_ids} val/test videos, {report.n_removed} train items removed"
            f" ({report.n_no_frames} without frames; frames: {report.frames})"
        )
        for f in report.files:
            print(
                f"  {Path(f.file).name}: train {f.train_before} -> {f.train_after} items, "
                f"{len(f.removed_ids)} videos removed, {f.n_no_frames} items without frames -> {f.output}"
            )
            if f.removed_ids and not args.quiet:
                print(f"    removed: {' '.join(f.removed_ids)}")
            if f.no_frames_ids and not args.quiet:
                print(f"    without frames: {' '.join(f.no_frames_ids)}")
    report = [r.to_json() for r in reports]
    path = write_json(Path(args.output_dir) / REPORT_NAME, report, ensure_ascii=False, indent=1)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
