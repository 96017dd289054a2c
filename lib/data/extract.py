"""Extract K frames per video into a frame TSV: the reference ``_tools/extract_video-frame.py``, made robust.

For every input video, :func:`lib.data.video.read_frames` picks the reference's frames (``int(N*(i+1))``,
``N = n_decoded_frames/(K+1)``) and :func:`lib.data.video.encode_jpeg` stores them as the reference did (PIL
JPEG quality 75, base64). Outputs beside ``PREFIX``:

* ``PREFIX.tsv`` + ``PREFIX.lineidx``: one row per video, ``id \\t b64_1 … b64_K`` (the reference layout;
  id = file stem), streamed through :class:`lib.data.tsv.TSVWriter` as videos finish, so a kill loses at most
  the rows in flight and never leaves a torn row; the final names appear when the run completes.
* ``PREFIX.failed.jsonl``: one ``{"path", "id", "reason"}`` per video of this run that could not be read
  (corrupt, truncated, zero bytes, not a video, audio only, duplicate id, a file name that cannot be a TSV
  id: one with a tab or a line break, or not UTF-8), and per entry of the input folder with a video suffix
  that is not a video file (a folder named ``x.mp4``, a dangling symlink, a symlink loop). A failure never
  stops the run; re-running tries the failed inputs again.
* ``PREFIX.videos.jsonl``: an append-only journal, one line per processed video (``id, path, status,
  n_frames, indices, flags, reason``), so too-short flags and frame counts survive a kill.
* ``PREFIX.json``: settings (tool version, K, frame rule, JPEG quality, size_short), counts (ok, failed,
  skipped, too_short), the too-short ids and the failures; written atomically, ``"status": "running"`` from
  the start and ``"complete"`` at the end.
* With ``audio`` (opt-in, :class:`lib.data.audio.AudioSettings`): ``PREFIX.audio.tsv`` + ``.lineidx``, one row
  per video keyed by the same id (:mod:`lib.data.audio`: VALOR's filterbank or the encoded mono waveform,
  resampled once). A video without an audio track gets a row saying so and is listed under
  ``audio.no_audio`` in ``PREFIX.json``; it is not a failure.

Re-running with the same ``PREFIX`` resumes: ids already in the table (finished or in progress) are skipped,
everything else (including earlier failures) is tried again. Resuming with other settings is refused. The
audio table resumes the same way on its own: a video whose frames are stored but whose audio row is missing
(a kill between the two rows, or ``audio`` added to an existing extraction) gets only its audio extracted.

``workers=1`` decodes in this process. With more, worker processes come from a fork server and a video that
kills its worker (a decoder segfault) is isolated and recorded as failed while the run goes on; with one
worker such a crash ends the run, and re-running resumes up to that video. Worker processes end with the
extractor, even when it is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import itertools
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lib.data.audio import AudioSettings, audio_row, audio_tsv_path, extract_audio
from lib.data.tsv import INPROGRESS_SUFFIX, TSVWriter, split_tsv_path
from lib.data.video import JPEG_QUALITY, VideoDecodeError, encode_jpeg, read_frames
from lib.utils.atomic import write_bytes, write_json

EXTRACTOR_VERSION = "1.0"
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif", ".m4v", ".mpg", ".mpeg", ".flv"})
FRAME_RULE = (
    "indices int(N*(i+1)), N = n_decoded_frames/(K+1), i = 0..K-1 (reference extract_video-frame.py); "
    "fewer decoded frames than K: same formula, indices repeat, flagged too_short"
)
# settings that must match for a run to continue an existing table
RESUME_SETTINGS = ("version", "k", "frame_rule", "jpeg_quality", "size_short")


# ------------------------------------------------------------------------------------------------ inputs


def list_videos(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The videos to extract, in row order.

    ``source`` is a folder (its top-level files with a suffix in :data:`VIDEO_SUFFIXES`, sorted by name), a
    text file listing one path per line (blank lines and ``#`` comments skipped; relative paths are taken
    from the list file's folder; order kept), or a sequence of paths (order kept).
    """
    if not isinstance(source, (str, os.PathLike)):
        return [Path(p) for p in source]
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if source.is_file():
        lines = source.read_text(encoding="utf-8").splitlines()
        paths = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        return [p if p.is_absolute() else source.parent / p for p in map(Path, paths)]
    raise FileNotFoundError(f"{source}: no such folder or list file")


def unusable_entries(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict[str, str]]:
    """Entries of a source folder that have a video suffix but are not video files, each ``{"path", "id",
    "reason"}``: folders, dangling symlinks, symlink loops, other non-regular files (a list file or a
    sequence of paths: none; their missing files fail when read)."""
    if not isinstance(source, (str, os.PathLike)) or not Path(source).is_dir():
        return []
    found = []
    for path in sorted(Path(source).iterdir()):
        if path.suffix.lower() not in VIDEO_SUFFIXES or path.is_file():
            continue
        reason = "not a regular file"
        if path.is_symlink():
            try:
                os.stat(path)
                reason = "a symlink to something that is not a regular file"
            except OSError as e:
                loop = e.errno == errno.ELOOP
                reason = "a symlink loop" if loop else f"a dangling symlink (to {os.readlink(path)})"
        elif path.is_dir():
            reason = "a folder named like a video file"
        found.append({"path": str(path), "id": video_id(path), "reason": reason})
    return found


def video_id(path: Path) -> str:
    """A video's id (TSV column 0): its file stem, as the reference's id → row maps use."""
    return path.stem


def id_problem(vid: str) -> str | None:
    """Why ``vid`` cannot be a TSV id (column 0), or None."""
    if not vid:
        return "the file name gives an empty id"
    if any(c in vid for c in "\t\n\r"):
        return "the file name contains a tab or a line break, which a TSV id cannot hold; rename the file"
    try:
        vid.encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8 (a TSV id must be); rename the file"
    return None


# ------------------------------------------------------------------------------------------------ one video


@dataclass
class Outcome:
    """What became of one video; ``columns`` (the base64 JPEGs) only when ``status == "ok"``."""

    id: str
    path: str
    status: str  # "ok" | "failed"
    n_frames: int = 0
    indices: list[int] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    reason: str = ""
    columns: list[bytes] = field(default_factory=list)
    audio_columns: list[bytes] | None = None  # the audio row, when audio was extracted
    audio: dict[str, Any] | None = None  # its meta (kind, rate, length, or "audio": False and a reason)

    def journal_line(self) -> bytes:
        record = {k: v for k, v in asdict(self).items() if k not in ("columns", "audio_columns")}
        return json.dumps(record).encode() + b"\n"


def _with_audio(outcome: Outcome, audio: AudioSettings) -> Outcome:
    try:
        meta, data = extract_audio(outcome.path, audio)
    except Exception as e:  # noqa: BLE001 - a demuxer surprise means no audio, never a failed video
        meta, data = (
            {**audio.to_dict(), "audio": False, "reason": f"unexpected {type(e).__name__}: {e}"},
            None,
        )
    outcome.audio = meta
    outcome.audio_columns = audio_row(outcome.id, meta, data)
    return outcome


def extract_one(
    path: str,
    k: int,
    size_short: int | None,
    quality: int,
    audio: AudioSettings | None = None,
    frames: bool = True,
) -> Outcome:
    """Read and encode one video; any failure becomes an ``Outcome`` with a reason instead of an exception.
    ``audio``: also extract its audio; ``frames=False``: only its audio (the frames are stored already)."""
    vid = video_id(Path(path))
    if not frames:
        return _with_audio(Outcome(vid, path, "ok"), audio) if audio else Outcome(vid, path, "ok")
    try:
        video = read_frames(path, k)
        columns = [encode_jpeg(frame, quality=quality, size_short=size_short) for frame in video.frames]
    except VideoDecodeError as e:
        return Outcome(vid, path, "failed", reason=e.reason)
    except Exception as e:  # noqa: BLE001 - a decoder surprise on one file must not stop the run
        return Outcome(vid, path, "failed", reason=f"unexpected {type(e).__name__}: {e}")
    outcome = Outcome(vid, path, "ok", video.n_frames, video.indices, video.flags, columns=columns)
    return _with_audio(outcome, audio) if audio else outcome


# ------------------------------------------------------------------------------------------------ outputs


@dataclass(frozen=True)
class OutputPaths:
    prefix: Path
    tsv: Path
    lineidx: Path
    summary: Path
    failed: Path
    journal: Path
    audio: Path

    @classmethod
    def of(cls, prefix: str | os.PathLike) -> OutputPaths:
        tsv, lineidx = split_tsv_path(prefix)
        stem = Path(str(tsv)[: -len(".tsv")])
        return cls(
            stem,
            tsv,
            lineidx,
            Path(f"{stem}.json"),
            Path(f"{stem}.failed.jsonl"),
            Path(f"{stem}.videos.jsonl"),
            audio_tsv_path(stem),
        )

    def has_rows(self) -> bool:
        return self.tsv.exists() or Path(str(self.tsv) + INPROGRESS_SUFFIX).exists()

    def has_audio_rows(self) -> bool:
        return self.audio.exists() or Path(str(self.audio) + INPROGRESS_SUFFIX).exists()


def _check_resumable(out: OutputPaths, settings: dict[str, Any]) -> None:
    """Refuse to append to a table made with other settings (or by something else)."""
    if not out.has_rows():
        return
    fix = f"delete {out.prefix}.* or choose another output prefix"
    if settings.get("audio_settings") and out.has_audio_rows():
        previous_audio = _previous_summary(out).get("audio_settings")
        if previous_audio != settings["audio_settings"]:
            raise ValueError(
                f"{out.audio} was extracted with audio settings {previous_audio}; this run asks for "
                f"{settings['audio_settings']}; delete {out.audio} (and its .lineidx) to extract it again"
            )
    try:
        previous = json.loads(out.summary.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        raise ValueError(
            f"{out.tsv} exists but {out.summary} is missing or unreadable, so it cannot be "
            f"resumed safely; {fix}"
        ) from None
    differ = [key for key in RESUME_SETTINGS if previous.get(key) != settings[key]]
    if differ:
        was = ", ".join(f"{key}={previous.get(key)!r}" for key in differ)
        raise ValueError(
            f"{out.tsv} was extracted with {was}; this run asks for "
            f"{', '.join(f'{key}={settings[key]!r}' for key in differ)}; {fix}"
        )


def _previous_summary(out: OutputPaths) -> dict[str, Any]:
    try:
        return json.loads(out.summary.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _read_journal(path: Path) -> dict[str, dict]:
    """Latest journal record per id (a line torn by a kill is ignored)."""
    records: dict[str, dict] = {}
    if path.exists():
        for line in path.read_bytes().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            records[record["id"]] = record
    return records


# ------------------------------------------------------------------------------------------------ the run


def _exit_with(parent_pid: int) -> None:
    """Initializer of every worker process: it ends when the extractor (``parent_pid``) ends, killed or not,
    instead of waiting forever for work. A thread checks the extractor twice a second; on Linux the kernel
    also kills the worker when the process that forked it (the fork server) dies."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="exit-with-parent", daemon=True).start()


_PR_SET_PDEATHSIG = 1


def _watch_parent(pid: int) -> None:
    while process_alive(pid):
        time.sleep(0.5)
    os._exit(1)  # the extractor is gone: nobody will read this worker's results


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes (from :func:`_pool_context`) that exit with this process."""
    return ProcessPoolExecutor(
        workers, mp_context=_pool_context(), initializer=_exit_with, initargs=(os.getpid(),)
    )


def _pool_context() -> multiprocessing.context.BaseContext:
    """Worker processes come from a fork server, never from a plain fork of this process: a fork taken while
    one of its threads (FFmpeg's, tqdm's) holds a lock deadlocks the child."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["lib.data.extract"])
    return context


def _outcomes(
    jobs: Sequence[str], worker: Callable[[str], Outcome], workers: int, ordered: bool
) -> Iterator[Outcome]:
    """``worker(job)`` for every job: in this process for one worker, else in a pool of ``workers`` processes
    (results in job order when ``ordered``). A job that kills its worker process (a decoder crash) cannot stop
    the run: the jobs in flight when the pool broke are retried one at a time in a process of their own, and
    the one that kills that too becomes a failed ``Outcome``."""
    if workers <= 1:
        yield from map(worker, jobs)
        return
    pending = deque(jobs)
    while pending:
        in_flight = yield from _pooled(pending, worker, workers, ordered)
        for job in in_flight:
            yield _alone(job, worker)


def _pooled(pending: deque[str], worker, workers: int, ordered: bool) -> Generator[Outcome, None, list[str]]:
    """Run jobs from ``pending`` with at most ``2 * workers`` in flight; return the in-flight jobs if the pool
    breaks (a worker process died), else an empty list once ``pending`` is empty."""
    with _pool(workers) as pool:
        in_flight: dict[Future, str] = {}
        while pending or in_flight:
            try:
                while pending and len(in_flight) < 2 * workers:
                    future = pool.submit(worker, pending[0])
                    in_flight[future] = pending.popleft()
            except BrokenProcessPool:  # a worker died since the last result
                return list(in_flight.values())
            if ordered:
                done = [next(iter(in_flight))]  # the oldest job (dicts keep submission order)
            else:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    outcome = future.result()
                except BrokenProcessPool:
                    return list(in_flight.values())
                del in_flight[future]
                yield outcome
    return []


def _alone(job: str, worker) -> Outcome:
    with _pool(1) as pool:
        try:
            return pool.submit(worker, job).result()
        except BrokenProcessPool:
            return Outcome(
                video_id(Path(job)), job, "failed", reason="the decoding process died on this file"
            )


def extract_videos(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    k: int,
    output_prefix: str | os.PathLike,
    workers: int = 1,
    size_short: int | None = None,
    quality: int = JPEG_QUALITY,
    ordered: bool = False,
    progress: bool = True,
    audio: AudioSettings | None = None,
) -> dict[str, Any]:
    """Extract ``k`` frames from every video of ``paths`` (see :func:`list_videos`) into ``output_prefix``.

    ``workers`` processes decode in parallel; rows are written as videos finish, in input order when
    ``ordered`` (deterministic), else in completion order. ``audio``: also write ``PREFIX.audio.tsv`` (off by
    default). Returns the summary also written to ``PREFIX.json``.
    """
    if k < 1:
        raise ValueError(f"k (frames per video) must be >= 1, got {k}")
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    if size_short is not None and size_short < 1:
        raise ValueError(f"size_short must be a positive number of pixels, got {size_short}")
    started = time.time()
    out = OutputPaths.of(output_prefix)
    settings = {
        "tool": "lib.data.extract",
        "version": EXTRACTOR_VERSION,
        "k": k,
        "frame_rule": FRAME_RULE,
        "jpeg_encoder": "PIL",
        "jpeg_quality": quality,
        "size_short": size_short,
        "layout": "id \\t base64 JPEG x K",
        "workers": workers,
    }
    if audio is not None:
        settings["audio_settings"] = audio.to_dict()
    _check_resumable(out, settings)
    videos = list_videos(paths)
    resuming = out.has_rows()
    journal = _read_journal(out.journal) if resuming else {}
    if audio is None and out.has_audio_rows():  # an earlier run's audio table stays described
        previous_audio = _previous_summary(out).get("audio_settings")
        if previous_audio:
            settings["audio_settings"] = previous_audio
    out.tsv.parent.mkdir(parents=True, exist_ok=True)
    write_json(out.summary, {**settings, "status": "running"}, indent=1)

    failures: list[dict[str, str]] = unusable_entries(paths)
    too_short: list[str] = []
    counts = {"inputs": len(videos) + len(failures), "ok": 0, "failed": 0, "skipped": 0, "too_short": 0}
    audio_counts = {"written": 0, "without_audio": 0, "skipped": 0}
    no_audio: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        writer = stack.enter_context(TSVWriter(out.tsv, resume=resuming))
        log = stack.enter_context(open(out.journal, "ab" if resuming else "wb"))
        audio_writer = (
            stack.enter_context(TSVWriter(out.audio, resume=resuming and out.has_audio_rows()))
            if audio is not None
            else None
        )
        done = writer.keys_written()
        audio_done = audio_writer.keys_written() if audio_writer is not None else set()
        jobs, audio_jobs, first_path = [], [], {}
        for path in videos:
            vid = video_id(path)
            problem = id_problem(vid)
            if problem:
                failures.append(
                    {"path": str(path), "id": vid.encode("utf-8", "replace").decode(), "reason": problem}
                )
                continue
            if vid in first_path:
                failures.append(
                    {"path": str(path), "id": vid, "reason": f"duplicate id (also {first_path[vid]})"}
                )
                continue
            first_path[vid] = path
            if vid in done:
                counts["skipped"] += 1
                if "too_short" in journal.get(vid, {}).get("flags", []):
                    too_short.append(vid)
                if audio is not None and vid not in audio_done:
                    audio_jobs.append(str(path))  # frames stored, audio row missing: audio only
                elif audio is not None:
                    audio_counts["skipped"] += 1
                    previous = journal.get(vid, {}).get("audio") or {}
                    if previous.get("audio") is False:
                        no_audio[vid] = previous.get("reason", "")
            else:
                jobs.append(str(path))
        worker = functools.partial(extract_one, k=k, size_short=size_short, quality=quality, audio=audio)
        audio_worker = functools.partial(worker, frames=False)
        outcomes = itertools.chain(
            _outcomes(jobs, worker, workers, ordered), _outcomes(audio_jobs, audio_worker, workers, ordered)
        )
        bar = tqdm(
            total=len(jobs) + len(audio_jobs),
            disable=not progress,
            unit="video",
            desc=f"extract {out.tsv.name}",
        )
        for outcome in outcomes:
            if outcome.status == "ok":
                if outcome.columns:
                    writer.write([outcome.id, *outcome.columns])
                    writer.flush()
                    counts["ok"] += 1
                    if "too_short" in outcome.flags:
                        too_short.append(outcome.id)
                if audio_writer is not None and outcome.audio_columns is not None:
                    audio_writer.write(outcome.audio_columns)
                    audio_writer.flush()
                    audio_counts["written"] += 1
                    if outcome.audio and outcome.audio.get("audio") is False:
                        audio_counts["without_audio"] += 1
                        no_audio[outcome.id] = outcome.audio.get("reason", "")
            else:
                failures.append({"path": outcome.path, "id": outcome.id, "reason": outcome.reason})
            if outcome.status == "ok" and not outcome.columns:  # audio only: keep the frames' record
                record = {
                    **journal.get(outcome.id, {"id": outcome.id, "path": outcome.path}),
                    "audio": outcome.audio,
                }
                log.write(json.dumps(record).encode() + b"\n")
            else:
                log.write(outcome.journal_line())
            log.flush()
            bar.update()
            bar.set_postfix(failed=len(failures), refresh=False)
        bar.close()
        rows = len(writer)
        audio_rows = len(audio_writer) if audio_writer is not None else None

    counts["failed"] = len(failures)
    counts["too_short"] = len(too_short)
    write_bytes(out.failed, b"".join(json.dumps(f).encode() + b"\n" for f in failures))
    summary = {
        **settings,
        "status": "complete",
        "counts": counts,
        "rows": rows,
        "too_short_ids": sorted(too_short),
        "failures": failures,
        "outputs": {name: str(getattr(out, name)) for name in ("tsv", "lineidx", "failed", "journal")},
        "seconds": round(time.time() - started, 3),
    }
    if audio is not None:
        summary["outputs"]["audio"] = str(out.audio)
        summary["audio"] = {
            "rows": audio_rows,
            "counts": audio_counts,
            "no_audio": [{"id": vid, "reason": no_audio[vid]} for vid in sorted(no_audio)],
        }
    write_json(out.summary, summary, indent=1)
    return summary
