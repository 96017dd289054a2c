"""Checking frame TSVs: read every row of a file and report what is wrong (``_tools/check_tsv.py``), and build
an id → offset map while checking each row's first frame (``_tools/make_id2lineidx_pkl.py``).

The store itself (reader, writer, shards, ``.lineidx``) is :mod:`lib.data.tsv`; this module only reads.
JPEG decoding (:mod:`lib.data.frames`, which pulls in torch) is imported only when a check decodes frames.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lib.data.tsv import (
    TSVError,
    TSVFile,
    decode_key,
    eight_byte_lineidx,
    frame_columns,
    read_lineidx,
    split_tsv_path,
)


def _jpeg_decoder():
    # Imported on demand: frames.py pulls in torch, which a check without decoding does not need.
    from lib.data.frames import decode_jpeg

    return decode_jpeg


# ------------------------------------------------------------------------------------------ id2lineidx


def build_id2lineidx(tsv: TSVFile, check_first_frame: bool = True) -> dict[str, int]:
    """``{Path(id).stem: byte offset}`` for every row; optionally decodes each row's first frame as a check.

    (The stem drops a file extension kept in an id such as ``video7010.mp4``.)
    """
    decode = _jpeg_decoder() if check_first_frame else None
    mapping: dict[str, int] = {}
    for i in range(len(tsv)):
        row = tsv.row(i)
        key = decode_key(row[0], f"{tsv.path} row {i}")
        stem = Path(key).stem
        if decode is not None:
            try:
                decode(frame_columns(row)[0])
            except (ValueError, IndexError) as e:
                raise TSVError(
                    f"{tsv.path} row {i} (id {key!r}): first frame is not a decodable JPEG: {e}"
                ) from None
        if stem in mapping:
            raise TSVError(f"{tsv.path} row {i}: id {key!r} repeats the id stem {stem!r} of an earlier row")
        mapping[stem] = int(tsv.offsets[i])
    return mapping


# ---------------------------------------------------------------------------------------- inspection


class _Checked:
    """What every check report shares: ``ok`` when it found no problem, and a JSON-ready dict."""

    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


@dataclass
class TSVReport(_Checked):
    """What :func:`inspect_tsv` found; ``problems`` is empty for a healthy file."""

    path: str
    lineidx: str | None
    rows: int = 0
    unique_ids: int = 0
    frames_min: int | None = None
    frames_max: int | None = None
    frames_usual: int | None = None  # the most common number of frames per row
    short_rows: list[str] = field(default_factory=list)  # rows with fewer frames than frames_usual
    final_newline: bool = True
    frame_layouts: dict[str, int] = field(default_factory=dict)
    frames_decoded: int = 0
    frames_undecodable: int = 0
    undecodable_frames: list[str] = field(default_factory=list)
    bad_offsets: list[str] = field(default_factory=list)
    duplicate_ids: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        frames = "-" if self.frames_min is None else f"min {self.frames_min}, max {self.frames_max}"
        lines = [
            f"file:            {self.path}",
            f"lineidx:         {self.lineidx or 'none (readers build one)'}",
            f"rows:            {self.rows}",
            f"unique ids:      {self.unique_ids} ({len(self.duplicate_ids)} duplicated)",
            f"frames per row:  {frames}" + (f", usually {self.frames_usual}" if self.frames_usual else ""),
            f"layouts:         {self.frame_layouts or '-'}",
            f"decoded frames:  {self.frames_decoded} ({self.frames_undecodable} undecodable)",
        ]
        lines += [f"  short row: {r}" for r in self.short_rows]
        lines += [f"  undecodable: {u}" for u in self.undecodable_frames]
        lines += [f"  bad offset: {b}" for b in self.bad_offsets]
        lines.append("problems:        " + ("none" if self.ok else str(len(self.problems))))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


_MAX_LISTED = 20  # entries kept per problem list in a report


def inspect_tsv(
    path: str | os.PathLike, decode: bool = False, lineidx: str | os.PathLike | None = None
) -> TSVReport:
    """Read every row of ``path`` and compare its index with the true row starts (writes nothing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSV file not found: {path}")
    if lineidx is None:
        default = split_tsv_path(path)[1]
        lineidx = next((p for p in (default, eight_byte_lineidx(default)) if p.is_file()), None)
    report = TSVReport(str(path), str(lineidx) if lineidx else None)
    decode_fn = _jpeg_decoder() if decode else None
    starts: list[int] = []
    seen: dict[str, list[int]] = {}
    counts: list[tuple[int, str, int]] = []  # (row, id, frames) of every row with frame columns
    offset = 0
    line = b"\n"
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            starts.append(offset)
            offset += len(line)
            counted = _inspect_row(report, i, line.rstrip(b"\r\n").split(b"\t"), seen, decode_fn)
            if counted is not None:
                counts.append((i, *counted))
    report.rows = len(starts)
    report.unique_ids = len(seen)
    report.duplicate_ids = {k: v for k, v in seen.items() if len(v) > 1}
    for key, rows in list(report.duplicate_ids.items())[:_MAX_LISTED]:
        report.problems.append(f"id {key!r} appears in rows {rows} (readers use the first)")
    _check_frame_counts(report, counts)
    if not line.endswith(b"\n"):
        report.final_newline = False
        report.problems.append(
            f"the last row (row {len(starts) - 1}) has no final newline: the file was cut short while being "
            "written or copied, and that row may be incomplete"
        )
    if lineidx is not None:
        _compare_offsets(report, read_lineidx(lineidx), np.array(starts, dtype=np.int64))
    if report.frames_undecodable:
        report.problems.append(f"{report.frames_undecodable} undecodable frames")
    return report


def _check_frame_counts(report: TSVReport, counts: list[tuple[int, str, int]]) -> None:
    """Rows with fewer frames than most rows have (a TSV cut between frames) are problems."""
    if not counts:
        return
    tally = Counter(n for _, _, n in counts)
    usual = max(tally, key=lambda n: (tally[n], n))
    report.frames_usual = usual
    short = [(i, key, n) for i, key, n in counts if n < usual]
    report.short_rows = [f"row {i} (id {key!r}): {n} frames" for i, key, n in short[:_MAX_LISTED]]
    if short:
        report.problems.append(
            f"{len(short)} rows have fewer frames than the {usual} most rows have (cut between frames?), "
            f"e.g. row {short[0][0]} (id {short[0][1]!r}) with {short[0][2]}"
        )


def _inspect_row(
    report: TSVReport, i: int, row: list[bytes], seen: dict, decode_fn
) -> tuple[str, int] | None:
    """Check one row (id, frame columns, decoding); its (id, number of frames) when it has frames."""
    try:
        key = decode_key(row[0], f"row {i}")
    except TSVError as e:
        report.problems.append(str(e))
        key = row[0].decode("utf-8", "replace")
    if not key:
        report.problems.append(f"row {i}: empty id")
    seen.setdefault(key, []).append(i)
    try:
        frames = frame_columns(row)
    except TSVError:
        report.problems.append(f"row {i} (id {key!r}): no base64 JPEG frame columns")
        return None
    layout = "id, frames" if len(frames) == len(row) - 1 else "id, meta, frames"
    report.frame_layouts[layout] = report.frame_layouts.get(layout, 0) + 1
    n = len(frames)
    report.frames_min = n if report.frames_min is None else min(report.frames_min, n)
    report.frames_max = n if report.frames_max is None else max(report.frames_max, n)
    if decode_fn is None:
        return key, n
    first = len(row) - n
    for j, frame in enumerate(frames):
        try:
            decode_fn(frame)
            report.frames_decoded += 1
        except ValueError as e:
            report.frames_undecodable += 1
            if len(report.undecodable_frames) < _MAX_LISTED:
                report.undecodable_frames.append(f"row {i} (id {key!r}) column {first + j}: {e}")
    return key, n


def _compare_offsets(report: TSVReport, indexed: np.ndarray, true: np.ndarray) -> None:
    if len(indexed) != len(true):
        report.bad_offsets.append(f"{report.lineidx} lists {len(indexed)} rows, the TSV has {len(true)}")
    n = min(len(indexed), len(true))
    for i in np.flatnonzero(indexed[:n] != true[:n])[:_MAX_LISTED]:
        report.bad_offsets.append(f"row {int(i)}: index says {int(indexed[i])}, row starts at {int(true[i])}")
    if report.bad_offsets:
        report.problems.append(
            f"{report.lineidx} does not match the TSV; delete it (readers rebuild it) or rebuild it now"
        )


# ---------------------------------------------------------------------------------------- audio rows


@dataclass
class AudioTSVReport(_Checked):
    """What :func:`inspect_audio_tsv` found in an audio sidecar (``PREFIX.audio.tsv``, lib.data.audio)."""

    path: str
    lineidx: str | None
    rows: int = 0
    unique_ids: int = 0
    with_audio: int = 0
    without_audio: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    decoded: int = 0
    missing_ids: list[str] = field(default_factory=list)  # frame-table ids without an audio row
    bad_offsets: list[str] = field(default_factory=list)
    duplicate_ids: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        lines = [
            f"audio file:      {self.path}",
            f"lineidx:         {self.lineidx or 'none (readers build one)'}",
            f"rows:            {self.rows} ({self.with_audio} with audio, {self.without_audio} without)",
            f"unique ids:      {self.unique_ids} ({len(self.duplicate_ids)} duplicated)",
            f"kinds:           {self.kinds or '-'}",
            f"audio seconds:   {self.seconds:.1f}",
            f"decoded rows:    {self.decoded}",
        ]
        lines += [f"  bad offset: {b}" for b in self.bad_offsets]
        lines.append("problems:        " + ("none" if self.ok else str(len(self.problems))))
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def inspect_audio_tsv(
    path: str | os.PathLike,
    decode: bool = False,
    lineidx: str | os.PathLike | None = None,
    frame_tsv: str | os.PathLike | None = None,
) -> AudioTSVReport:
    """Read every row of an audio TSV: meta JSON, base64 data, its size against the meta (``decode``: decode
    every waveform too), duplicates, the index; with ``frame_tsv``, every id of the frame table must have an
    audio row (a kill between a video's two rows leaves it without one until the extraction resumes)."""
    from lib.data.audio import AudioFormatError, decode_fbank, decode_waveform, parse_audio_row

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio TSV file not found: {path}")
    if lineidx is None:
        default = split_tsv_path(path)[1]
        lineidx = next((p for p in (default, eight_byte_lineidx(default)) if p.is_file()), None)
    report = AudioTSVReport(str(path), str(lineidx) if lineidx else None)
    starts: list[int] = []
    seen: dict[str, list[int]] = {}
    offset = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            starts.append(offset)
            offset += len(line)
            row = line.rstrip(b"\r\n").split(b"\t")
            try:
                key, meta, data = parse_audio_row(row)
                seen.setdefault(key, []).append(i)
                report.kinds[meta["kind"]] = report.kinds.get(meta["kind"], 0) + 1
                if data is None:
                    report.without_audio += 1
                    continue
                report.with_audio += 1
                report.seconds += float(meta.get("seconds", 0.0))
                if meta["kind"] == "fbank":
                    decode_fbank(meta, data)  # checks the size against the meta
                    report.decoded += 1
                elif decode:
                    decode_waveform(meta, data)
                    report.decoded += 1
            except (AudioFormatError, KeyError, TypeError, ValueError) as e:
                seen.setdefault(row[0].decode("utf-8", "replace"), []).append(i)
                if len(report.problems) < _MAX_LISTED:
                    report.problems.append(f"row {i}: {e}")
    report.rows = len(starts)
    report.unique_ids = len(seen)
    report.duplicate_ids = {k: v for k, v in seen.items() if len(v) > 1}
    for key, rows in list(report.duplicate_ids.items())[:_MAX_LISTED]:
        report.problems.append(f"id {key!r} appears in rows {rows}")
    if lineidx is not None:
        _compare_offsets(report, read_lineidx(lineidx), np.array(starts, dtype=np.int64))  # type: ignore[arg-type]
    if frame_tsv is not None:
        with TSVFile(frame_tsv) as frames:
            missing = sorted(set(frames.keys()) - set(seen))
        report.missing_ids = missing[:_MAX_LISTED]
        if missing:
            report.problems.append(
                f"{len(missing)} ids of {frame_tsv} have no audio row (e.g. {missing[:3]}); "
                "re-run the extraction with the same --audio to add them"
            )
    return report
