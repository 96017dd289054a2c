"""Extract K evenly spaced frames per video into a frame TSV (+ .lineidx), as the reference tool did.

    python _tools/extract_video-frame.py --path VIDEOS_DIR_OR_LIST --sample 5 --output _datasets/img_msrvtt

Writes PREFIX.tsv/.lineidx (rows: id, K base64 JPEGs), PREFIX.failed.jsonl, PREFIX.videos.jsonl and
PREFIX.json (see lib/data/extract.py). With --audio also PREFIX.audio.tsv/.lineidx: each video's audio by
the same id (lib/data/audio.py): `--audio fbank` (VALOR's filterbank), `--audio flac --audio_rate 32000`, ...
Re-running the same command resumes. Exit status: 0 when every video was extracted (or already was), 1 when
some failed (the others are written; a file that cannot be a TSV row, e.g. a name with a tab, a dangling
symlink or a folder named *.mp4, counts as failed; a video without audio does not), 2 on a usage error or
when no video was found.

Without --output, the reference's command works as written (run inside _tools/, like the reference):

    python extract_video-frame.py --path=msrvtt --sample=5

reads the videos of _msrvtt/ and writes msrvtt.pkl ({video_id: [base64 JPEG, ...]}, the reference's output,
for `python extract_tsv.py --path=msrvtt`), next to the resumable table msrvtt.tsv (+ .lineidx, .json, ...)
it is made from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.audio import STORE_KINDS, AudioSettings
from lib.data.extract import VIDEO_SUFFIXES, extract_videos, list_videos, unusable_entries
from lib.data.tsv import save_frame_pickle
from lib.data.video import JPEG_QUALITY


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--path",
        required=True,
        help=f"folder of videos (top-level files ending in {' '.join(sorted(VIDEO_SUFFIXES))}) "
        "or a text file listing video paths, one per line; without --output: NAME, the reference's "
        "layout (videos in _NAME/, output NAME.pkl)",
    )
    parser.add_argument("--sample", required=True, type=positive_int, help="frames per video (K)")
    parser.add_argument(
        "--output",
        help="output prefix: writes PREFIX.tsv, PREFIX.lineidx, ... (default: the reference's layout, see "
        "--path)",
    )
    parser.add_argument("--workers", type=positive_int, default=1, help="decoding processes (default 1)")
    parser.add_argument(
        "--size_short",
        type=positive_int,
        default=None,
        help="downscale frames so the shorter side is this many pixels (default: keep)",
    )
    parser.add_argument(
        "--quality",
        type=positive_int,
        default=JPEG_QUALITY,
        help=f"JPEG quality 1-100 (default {JPEG_QUALITY}, the reference's)",
    )
    parser.add_argument(
        "--ordered",
        action="store_true",
        help="write rows in input order (deterministic) instead of completion order",
    )
    parser.add_argument(
        "--audio",
        choices=STORE_KINDS,
        default=None,
        help="also store each video's audio in PREFIX.audio.tsv: fbank (VALOR's filterbank, float16), "
        "flac or aac (the mono waveform); default: no audio",
    )
    parser.add_argument(
        "--audio_rate", type=positive_int, default=22050, help="resample audio once to this rate (Hz)"
    )
    parser.add_argument("--audio_mels", type=positive_int, default=64, help="mel bins of --audio fbank")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def reference_layout(name: str) -> tuple[Path, Path]:
    """The reference's ``--path=NAME`` without --output: the videos of ``_NAME/`` and the output NAME.pkl."""
    folder = Path(f"_{name}")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"without --output the reference's layout is used: videos in {folder}/ (from the current folder "
            f"{Path.cwd()}), output {name}.pkl; {folder}/ does not exist. Give --output PREFIX to extract "
            f"{name} into PREFIX.tsv"
        )
    return folder, Path(f"{name}.pkl")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pkl = None
    try:
        audio = AudioSettings(args.audio, args.audio_rate, args.audio_mels) if args.audio else None
        if args.output is None:
            args.path, pkl = reference_layout(args.path)
            args.output = str(pkl.with_suffix(""))
        if not list_videos(args.path) and not unusable_entries(args.path):
            print(f"error: no videos found in {args.path}", file=sys.stderr)
            return 2
        summary = extract_videos(
            args.path,
            args.sample,
            args.output,
            workers=args.workers,
            size_short=args.size_short,
            quality=args.quality,
            ordered=args.ordered,
            progress=not args.quiet,
            audio=audio,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = summary["counts"]
    if pkl is not None:
        print(f"{pkl}: {save_frame_pickle(summary['outputs']['tsv'], pkl)} videos (the reference's pickle)")
    print(
        f"{summary['outputs']['tsv']}: {summary['rows']} rows; this run: {counts['ok']} extracted, "
        f"{counts['skipped']} already done, {counts['failed']} failed, {counts['too_short']} too short"
    )
    if "audio" in summary:
        audio = summary["audio"]
        print(
            f"{summary['outputs']['audio']}: {audio['rows']} rows; this run: {audio['counts']['written']} "
            f"written, {len(audio['no_audio'])} videos without audio"
            + "".join(f"\n  no audio: {a['id']}: {a['reason']}" for a in audio["no_audio"])
        )
    for failure in summary["failures"]:
        print(f"  failed: {failure['path']}: {failure['reason']}", file=sys.stderr)
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
