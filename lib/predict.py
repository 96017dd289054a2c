"""Run a checkpoint on your own videos from the command line: one JSON object per line on stdout.

    python -m lib.predict --ckpt _snapshot/demo/run/model caption videos/      # every video of a folder
    python -m lib.predict --ckpt DIR caption a.mp4 b.mp4 --beam_size 3
    python -m lib.predict --ckpt DIR caption img_demo.tsv                      # the rows of a frame TSV
    python -m lib.predict --ckpt DIR answer a.mp4 --question "what color is the circle?"
    python -m lib.predict --ckpt DIR answer a.mp4 b.mp4 --question "what moves?" --options circle square
    python -m lib.predict --ckpt DIR retrieve --videos videos/ --texts "red circles" "a blue square" --top_k 3
    python -m lib.predict --ckpt DIR match a.mp4 --text "two red circles move left"
    python -m lib.predict --ckpt DIR run qaoe a.mp4 --input '{"question": "what moves?"}'  # any task

Inputs: video files, folders (their videos, sorted by name) and frame TSVs (``.tsv``: each row is a video
named by its id). A video file goes through the frame extractor's own code, so it gives what its TSV row
gives. A file that cannot be read (or a TSV row, or a TSV whose index is out of date) is named on stderr
and written as ``{"video", "error"}`` in its place; the others go on. Exit status: 0 when at least one video
was processed, 1 when none could be (or the checkpoint cannot be loaded), 2 for bad arguments.

Output, one line per video (per text for retrieve):

    caption   {"video", "caption", "score"}             score: mean log-probability per token
    answer    {"video", "question", "answer", "top"}    top: [[answer, log-probability], ...]
              with --options: {"video", "question", "options", "answer", "index", "scores"}
    retrieve  {"text", "results": [{"video", "score"}, ...]}   best first
    match     {"video", "text", "score"}                score: p("true") of the pair
    run       {"video", "task", **inputs, **the task predictor's output}
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from lib.data.extract import VIDEO_SUFFIXES, list_videos
from lib.data.frames import decode_jpeg
from lib.data.tsv import TSVError, TSVFile, frame_columns
from lib.data.video import VideoDecodeError
from lib.model.checkpoint import CheckpointError

Item = Any  # a path (str), a Video, or an error record {"video", "error"}
Record = dict[str, Any]


# ------------------------------------------------------------------------------------------ arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lib.predict",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        add_common(sub, suppress=True)  # the common options may also come after the command
        return sub

    caption = command("caption", "a caption for every video")
    caption.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, folders, frame TSVs")
    caption.add_argument("--beam_size", type=int, default=None, help="beam width (default: the checkpoint's)")
    caption.add_argument(
        "--max_gen_length", type=int, default=None, help="maximum words (default: checkpoint)"
    )
    answer = command("answer", "answer a question about every video (open-ended, or among --options)")
    answer.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, folders, frame TSVs")
    answer.add_argument(
        "--question", required=True, help="the question (a [MASK] blank for fill-in-the-blank)"
    )
    answer.add_argument("--options", nargs="+", default=None, help="answer options (multiple choice)")
    answer.add_argument("--top_k", type=int, default=5, help="open-ended: how many ranked answers to list")
    retrieve = command("retrieve", "rank the videos for every text")
    retrieve.add_argument("--videos", nargs="+", required=True, metavar="VIDEO_OR_DIR", help="the video pool")
    retrieve.add_argument("--texts", nargs="+", required=True, help="the queries")
    retrieve.add_argument("--top_k", type=int, default=None, help="videos listed per text (default: all)")
    retrieve.add_argument(
        "--mode",
        default="auto",
        choices=("auto", "full", "dual", "rerank"),
        help="full: every pair through the fusion encoder; dual: contrastive embeddings; rerank: their "
        "shortlist re-scored by the matching head; auto: rerank for large galleries when the model has a "
        "contrastive head",
    )
    retrieve.add_argument("--rerank_k", type=int, default=None, help="rerank: candidates per text")
    match = command("match", "the true/false score of every video with a text")
    match.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, folders, frame TSVs")
    match.add_argument("--text", required=True, help="the text to match")
    run = command("run", "any registered task's predictor on every video (lib.tasks.registry)")
    run.add_argument("task_name", metavar="TASK", help="a registered task name, e.g. qaoe, captioning")
    run.add_argument("inputs", nargs="+", metavar="VIDEO_OR_DIR", help="video files, folders, frame TSVs")
    run.add_argument(
        "--input",
        default="{}",
        type=json.loads,
        help="the text inputs as a JSON object, e.g. '{\"question\": ..}'",
    )
    args = parser.parse_args(argv)
    if not args.ckpt:
        parser.error("--ckpt is required (a checkpoint folder, e.g. _snapshot/demo/run/model)")
    return args


def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--ckpt",
        default=default(None),
        help="checkpoint folder (required; or a reference .pt with --reference_args)",
    )
    parser.add_argument(
        "--task",
        default=default(None),
        help="which trained entry of the task to use (its name, e.g. msrvtt-qa)",
    )
    parser.add_argument(
        "--device", default=default(None), help="cpu, cuda, cuda:1 (default: cuda if present)"
    )
    parser.add_argument("--batch_size", type=int, default=default(8), help="clips per forward pass")
    parser.add_argument(
        "--precision",
        default=default("fp32"),
        choices=("fp32", "bf16", "fp16", "auto"),
        help="autocast dtype",
    )
    parser.add_argument(
        "--tokenizer", default=default(None), help="tokenizer folder (if the checkpoint has none)"
    )
    parser.add_argument(
        "--reference_args",
        default=default(None),
        help="reference args JSON (for a .pt or converted checkpoint)",
    )


# ------------------------------------------------------------------------------------------ inputs


def expand_inputs(inputs: Iterable[str]) -> Iterator[Item]:
    """Every video named by the inputs: files as given, folders' videos, frame-TSV rows (decoded here, so
    a bad row is an error record, not a failed batch)."""
    from lib.api import Video

    for name in inputs:
        path = Path(name)
        if path.is_dir():
            videos = list_videos(path)
            if not videos:
                print(f"note: no videos ({', '.join(sorted(VIDEO_SUFFIXES))}) in {path}", file=sys.stderr)
            yield from map(str, videos)
        elif path.suffix == ".tsv" and path.is_file():
            with TSVFile(path) as rows:
                try:
                    n_rows = len(rows)  # loads and checks the .lineidx
                except (TSVError, OSError) as e:  # a stale index: this input fails, the others go on
                    yield {"video": str(path), "error": str(e)}
                    continue
                for i in range(n_rows):
                    key = f"{path}:{i}"
                    try:
                        key = rows.key(i)
                        frames = tuple(decode_jpeg(column) for column in frame_columns(rows.row(i)))
                        yield Video(key, frames=frames)
                    except (TSVError, ValueError) as e:
                        yield {"video": key, "error": f"{path} row {i}: {e}"}
        else:
            yield name


def read_inputs(model, items: Iterable[Item]) -> Iterator[Item]:
    """Paths read into videos; a file that cannot be read becomes an error record."""
    for item in items:
        if isinstance(item, str):
            try:
                item = model.read_video(item)
            except VideoDecodeError as e:
                item = {"video": item, "error": e.reason}
        yield item


def batched(items: Iterable[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ------------------------------------------------------------------------------------------ commands


class Output:
    """JSON Lines on stdout; errors also named on stderr; counts of both."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def write(self, record: Record) -> None:
        if "error" in record:
            self.failed += 1
            print(f"error: {record['video']}: {record['error']}", file=sys.stderr)
        else:
            self.ok += 1
        print(json.dumps(record, ensure_ascii=False), flush=True)


def per_video(model, items: Iterable[Item], predict: Callable[[list], list[Record]], out: Output) -> None:
    """``predict`` on batches of the readable videos; every input's record written in input order."""
    for chunk in batched(read_inputs(model, items), model.batch_size):
        videos = [x for x in chunk if not isinstance(x, dict)]
        results = iter(predict(videos) if videos else [])
        for item in chunk:
            out.write(item if isinstance(item, dict) else next(results))


def run_command(model, args: argparse.Namespace, out: Output) -> None:
    if args.command == "caption":

        def predict(videos: list) -> list[Record]:
            options = {"beam_size": args.beam_size, "max_gen_length": args.max_gen_length}
            captions = model.caption(videos, task=args.task, with_scores=True, **options)
            return [{"video": v.name, **c} for v, c in zip(videos, captions)]

    elif args.command == "answer":
        asked = {"question": args.question} | ({"options": args.options} if args.options else {})

        def predict(videos: list) -> list[Record]:
            answers = model.answer(
                videos, args.question, args.options, task=args.task, top_k=args.top_k, with_scores=True
            )
            return [{"video": v.name, **asked, **a} for v, a in zip(videos, answers)]

    elif args.command == "match":

        def predict(videos: list) -> list[Record]:
            scores = model.match(videos, [args.text], task=args.task)
            return [{"video": v.name, "text": args.text, "score": s} for v, s in zip(videos, scores)]

    elif args.command == "run":

        def predict(videos: list) -> list[Record]:
            outputs = model.predict(args.task_name, videos, args.input, entry=args.task)
            return [
                {"video": v.name, "task": args.task_name, **args.input, **o} for v, o in zip(videos, outputs)
            ]

    else:
        retrieve(model, args, out)
        return
    per_video(model, expand_inputs(args.inputs), predict, out)


def retrieve(model, args: argparse.Namespace, out: Output) -> None:
    """Errors for unreadable videos first, then one ranking per text over the readable ones."""
    videos = []
    for item in read_inputs(model, expand_inputs(args.videos)):
        if isinstance(item, dict):
            out.write(item)
        else:
            videos.append(item)
    if not videos:
        return
    ranked = model.retrieve(
        args.texts, videos, top_k=args.top_k, task=args.task, mode=args.mode, rerank_k=args.rerank_k
    )
    for text, ranking in zip(args.texts, ranked):
        out.write({"text": text, "results": [{"video": videos[j].name, "score": s} for j, s in ranking]})


# ------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from lib.api import Lavender, LavenderWarning

    out = Output()
    with warnings.catch_warnings():
        warnings.simplefilter("always", LavenderWarning)
        warnings.showwarning = lambda message, *_, **__: print(f"note: {message}", file=sys.stderr)
        try:
            model = Lavender.from_pretrained(
                args.ckpt,
                device=args.device,
                batch_size=args.batch_size,
                precision=args.precision,
                tokenizer=args.tokenizer,
                reference_args=args.reference_args,
            )
            run_command(model, args, out)
        except (FileNotFoundError, CheckpointError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if out.ok == 0:
        print(f"error: nothing could be processed ({out.failed} inputs failed)", file=sys.stderr)
        return 1
    if out.failed:
        print(f"done: {out.ok} ok, {out.failed} failed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
