"""Convert a reference LAVENDER / VIOLET / SwinBERT checkpoint into our model directory.

    python _tools/convert_checkpoint.py --src ckpt_violet_msrvtt-retrieval_9.pt \
        --config _args/args_msrvtt-retrieval.json --out _snapshot/lavender-msrvtt [--key value ...]

``--config`` is the reference ``args.json`` (backbone keys are mapped); any LavenderConfig field can be
overridden with ``--field value`` (JSON values: ``--swin_depths [2,2,6,2]``). Prints the missing / unexpected
/ resized keys and exits 1 when the checkpoint does not fit (unexpected or missing keys, shape errors); the
output is then not written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.model.checkpoint import CheckpointError, config_from_reference_args, convert_reference_checkpoint


def parse_overrides(pairs: list[str]) -> dict[str, object]:
    """``--key value`` pairs -> dict; values parsed as JSON when possible, else kept as strings."""
    if len(pairs) % 2 or any(not k.startswith("--") for k in pairs[::2]):
        raise SystemExit(f"overrides must be --key value pairs, got {pairs}")
    out: dict[str, object] = {}
    for key, raw in zip(pairs[::2], pairs[1::2]):
        try:
            out[key[2:].replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key[2:].replace("-", "_")] = raw
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--src", required=True, help="reference checkpoint (.pt/.pth/.bin/.safetensors)")
    parser.add_argument(
        "--config", required=True, help="reference args JSON (vis_backbone_size, max_size_*, ...)"
    )
    parser.add_argument("--out", required=True, help="output directory (config.json + model.safetensors)")
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow arbitrary pickles (trusted files only)"
    )
    args, rest = parser.parse_known_args(argv)
    config_path = Path(args.config)
    if not config_path.is_file():
        print(f"error: config not found: {config_path}", file=sys.stderr)
        return 1
    ref_args = json.loads(config_path.read_text())
    try:
        config = config_from_reference_args(ref_args, parse_overrides(rest))
        size_img, size_frame = ref_args.get("size_img"), ref_args.get("size_frame")
        report = convert_reference_checkpoint(
            args.src,
            config,
            args.out,
            trained_grid=int(size_img) // 32 if size_img else None,
            trained_frames=int(size_frame) if size_frame else None,
            trust_pickle=args.trust_pickle,
        )
    except (FileNotFoundError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(report)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
