"""Check a frame TSV: rows, duplicate ids (readers use the first), rows with fewer frames than most rows (a
TSV cut between frames), a missing final newline (a file cut short), bad .lineidx offsets and (with --decode)
frames that do not decode or that libjpeg reports as corrupt ("Corrupt JPEG data: ..."). Prints a report
(JSON with --json). Writes nothing.

An audio sidecar (X.audio.tsv, from the extractor's --audio) is checked too: given X.tsv, its X.audio.tsv when
it exists (every frame id must have an audio row); given X.audio.tsv, that file alone (meta, data sizes,
--decode: every waveform).

Exit status: 0 = no problem, 1 = problems found (each named with its row), 2 = the file cannot be read.

    python _tools/check_tsv.py _datasets/img_msrvtt.tsv --decode
    python _tools/check_tsv.py webvid2.5m_train_0.tsv --json > report.json
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.data.audio import audio_tsv_path
from lib.data.tsv import TSVError
from lib.data.tsv_check import inspect_audio_tsv, inspect_tsv


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("tsv", help="the .tsv file")
    parser.add_argument("--decode", action="store_true", help="decode every frame (slower, finds bad JPEGs)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--lineidx", help="index to check (default: X.lineidx or X.lineidx.8b beside X.tsv)")
    args = parser.parse_args(argv)
    audio_only = args.tsv.endswith(".audio.tsv")
    sidecar = audio_tsv_path(args.tsv)
    try:
        if audio_only:
            reports = [inspect_audio_tsv(args.tsv, decode=args.decode, lineidx=args.lineidx)]
        else:
            reports = [inspect_tsv(args.tsv, decode=args.decode, lineidx=args.lineidx)]
            if sidecar.is_file():
                reports.append(inspect_audio_tsv(sidecar, decode=args.decode, frame_tsv=args.tsv))
    except (OSError, TSVError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        dicts = [r.to_dict() for r in reports]
        print(json.dumps(dicts[0] if len(dicts) == 1 else {"frames": dicts[0], "audio": dicts[1]}, indent=2))
    else:
        print("\n\n".join(r.to_text() for r in reports))
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
