"""Readers and validators for the reference annotation files (``txt_*.json``), taken as they are.

Formats (one JSON object per file; splits are ``train`` / ``val`` / ``test``):

=============  ===============================================================================================
kind           split contents
=============  ===============================================================================================
``pretrain``   ``{video: [caption, ...]}`` (a dict, not a list)
``retrieval``  ``[{"video", "caption"}, ...]``; ``caption`` is a string or a list of sentences (a paragraph)
``caption``    same as ``retrieval``
``qa_open``    ``[{"video", "question", "answer": int, "answer_text"}, ...]`` (+ optional ``"type"`` or
               ``"qtype"``); top-level ``"vocab": [answer, ...]`` and/or ``"ans2label": {answer: label}``
``qa_choice``  ``[{"video", "question", "option_0" .. "option_{K-1}", "answer": int}, ...]``; the question may
               be ``""`` (retrieval-style multiple choice)
``paragraph``  ``[{"video", "sentences" (or "caption"), "timestamps"?: [[start, end], ...], "duration"?}]``;
               also three public layouts, read as they are: ActivityNet Captions, DiDeMo (the
               collaborative-experts split) and LF-VILA's jsonl (:func:`read_paragraph_source`)
``long_qa``    ``qa_choice`` items with an optional ``"subtitle"`` (a string or a list of strings / of
               ``{"text"}``); TVQA / How2QA-style rows (``vid_name``, ``q``, ``a0``.., ``answer_idx``,
               ``sub``) are read as they are
(audio)        VALOR's txt_mapper folders, AudioCaps / Clotho csv, FAVDBench's caption json, MUSIC-AVQA's
               json, read as they are (:mod:`lib.data.audio_annotations`)
``classification``  ``[{"video", "label": class name}]``; or COIN's ``COIN.json`` as it is
               (``{"database": {video: {"class", "subset": training | testing, ...}}}``: train / test)
=============  ===============================================================================================

Every problem raises :class:`AnnotationError` naming the file, split, item and key. With ``on_error="skip"``
(for training) bad items are skipped, counted per split and logged instead.

Records are packed into a :class:`RecordList` (two numpy buffers) rather than kept as millions of Python
objects, so forked DataLoader workers share them instead of copying them page by page.

The module also holds LAVENDER's multi-task test-leak filter (:func:`filter_test_leaks`): video ids of any
val/test split of a dataset family are removed from the train splits of all of that family's files.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, overload

import numpy as np

from lib.data.annotation_base import AnnotationError, read_json_object, read_jsonl
from lib.data.annotation_base import type_name as _type_name
from lib.data.audio_annotations import is_audio_source, read_audio_source
from lib.data.tsv import TSVFile, load_id2lineidx
from lib.utils.atomic import write_json

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
EVAL_SPLITS = ("val", "test")
KINDS = ("pretrain", "retrieval", "caption", "qa_open", "qa_choice", "paragraph", "long_qa", "classification")
METADATA_KEYS = {"qa_open": ("vocab", "ans2label")}

OnError = Literal["raise", "skip"]


# ----------------------------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class PretrainItem:
    """One pretraining video with all of its captions."""

    video: str
    captions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CaptionItem:
    """A (video, text) pair of the retrieval / captioning files; a paragraph keeps its sentences apart."""

    video: str
    sentences: tuple[str, ...]

    @property
    def text(self) -> str:
        """All sentences joined by a space (what evaluation uses)."""
        return " ".join(self.sentences)


def caption_text(item: CaptionItem, train: bool, rng: random.Random) -> str:
    """A paragraph's sentences: a random non-empty ordered subset in training (Frozen-style), all in eval."""
    sentences = [s for s in item.sentences if s.strip()] or list(item.sentences)
    if not train or len(sentences) == 1:
        return " ".join(sentences)
    k = rng.randint(1, len(sentences))
    keep = sorted(rng.sample(range(len(sentences)), k))
    return " ".join(sentences[i] for i in keep)


@dataclass(frozen=True, slots=True)
class OpenQAItem:
    """An open-ended question; ``answer_text`` is the word the MLM head must predict, ``qtype`` its type."""

    video: str
    question: str
    answer: int
    answer_text: str
    qtype: str | None = None


@dataclass(frozen=True, slots=True)
class ChoiceItem:
    """A multiple-choice question (TGIF style, or retrieval style when ``question`` is empty)."""

    video: str
    question: str
    options: tuple[str, ...]
    answer: int


R = TypeVar("R")


class RecordList(Sequence[R]):
    """An immutable sequence of dataclass records packed as compact JSON rows in one numpy byte buffer.

    Items are rebuilt on access (a few microseconds). Unlike a list of Python objects, the two numpy arrays
    are never touched by reference counting, so forked DataLoader workers keep sharing their pages.
    """

    def __init__(self, record_type: type[R], records: Iterable[R] = ()) -> None:
        self.record_type = record_type
        self._names = tuple(f.name for f in fields(record_type))  # type: ignore[arg-type]
        buffer, offsets = bytearray(), [0]
        for record in records:
            row = [getattr(record, name) for name in self._names]
            buffer += json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
            offsets.append(len(buffer))
        self._data = np.frombuffer(bytes(buffer), dtype=np.uint8)
        self._offsets = np.asarray(offsets, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> R: ...
    @overload
    def __getitem__(self, index: slice) -> list[R]: ...
    def __getitem__(self, index: int | slice) -> R | list[R]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"record index {index} out of range for {n} records")
        index %= n
        start, end = self._offsets[index], self._offsets[index + 1]
        row = json.loads(self._data[start:end].tobytes())
        return self.record_type(*(tuple(v) if isinstance(v, list) else v for v in row))

    def __iter__(self) -> Iterator[R]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"RecordList[{self.record_type.__name__}]({len(self)} records, {self._data.nbytes} bytes)"


@dataclass
class AnnotationFile(Generic[R]):
    """The records of one annotation file per split, the count of skipped items per split, QA metadata."""

    path: Path
    kind: str
    splits: dict[str, RecordList[R]]
    skipped: dict[str, int] = field(default_factory=dict)
    vocab: list[str] | None = None
    ans2label: dict[str, int] | None = None

    def __getitem__(self, split: str) -> RecordList[R]:
        if split not in self.splits:
            raise KeyError(f"{self.path}: split '{split}' not loaded (loaded: {', '.join(self.splits)})")
        return self.splits[split]

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())


# ------------------------------------------------------------------------------------------ field checks


class _ItemError(Exception):
    """A bad item; turned into an AnnotationError once the split and index are known."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key


def _get(obj: Mapping[str, Any], key: str) -> Any:
    if key not in obj:
        raise _ItemError(key, f"missing (the item has keys: {', '.join(map(str, obj)) or 'none'})")
    return obj[key]


def _string(obj: Mapping[str, Any], key: str, allow_empty: bool = False) -> str:
    value = _get(obj, key)
    if not isinstance(value, str):
        raise _ItemError(key, f"expected a string, got {_type_name(value)} {value!r:.60}")
    if not allow_empty and not value.strip():
        raise _ItemError(key, "is empty")
    return value


def _integer(obj: Mapping[str, Any], key: str) -> int:
    value = _get(obj, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _ItemError(key, f"expected an integer, got {_type_name(value)} {value!r:.60}")
    return value


def _sentences(value: Any, key: str) -> tuple[str, ...]:
    """A caption: one string, or a list of sentences (empty sentences dropped; at least one must remain)."""
    if isinstance(value, str):
        if not value.strip():
            raise _ItemError(key, "is empty")
        return (value,)
    if isinstance(value, list):
        bad = [s for s in value if not isinstance(s, str)]
        if bad:
            raise _ItemError(key, f"expected a list of strings, found {_type_name(bad[0])} {bad[0]!r:.60}")
        sentences = tuple(s for s in value if s.strip())
        if sentences:
            return sentences
    raise _ItemError(key, f"expected a non-empty string or list of strings, got {value!r:.60}")


def _as_object(raw: Any) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise _ItemError(None, f"expected a JSON object, got {_type_name(raw)} {raw!r:.60}")
    return raw


# ----------------------------------------------------------------------------------------- item parsers


@dataclass
class _FileContext:
    """What item parsers need to know about the whole file."""

    label2ans: dict[int, str] | None = None
    n_options: int | None = None


def _parse_pretrain(entry: tuple[str, Any], ctx: _FileContext) -> PretrainItem:
    video, captions = entry
    return PretrainItem(video, _sentences(captions, "captions"))


def _parse_caption(raw: Any, ctx: _FileContext) -> CaptionItem:
    obj = _as_object(raw)
    return CaptionItem(_string(obj, "video"), _sentences(_get(obj, "caption"), "caption"))


def _parse_open_qa(raw: Any, ctx: _FileContext) -> OpenQAItem:
    obj = _as_object(raw)
    answer = _integer(obj, "answer")
    if "answer_text" in obj:
        answer_text = _string(obj, "answer_text")
    elif ctx.label2ans is not None and answer in ctx.label2ans:
        answer_text = ctx.label2ans[answer]
    else:
        raise _ItemError(
            "answer_text", "missing, and 'answer' is not a label of the top-level vocab/ans2label"
        )
    qtype = obj.get("type", obj.get("qtype"))
    if qtype is not None and (isinstance(qtype, bool) or not isinstance(qtype, str | int)):
        raise _ItemError("type", f"expected a string or integer question type, got {qtype!r:.60}")
    return OpenQAItem(
        _string(obj, "video"),
        _string(obj, "question"),
        answer,
        answer_text,
        None if qtype is None else str(qtype),
    )


def _parse_choice(raw: Any, ctx: _FileContext) -> ChoiceItem:
    obj = _as_object(raw)
    n = 0
    while f"option_{n}" in obj:
        n += 1
    if n < 2:
        raise _ItemError(
            "option_0" if n == 0 else "option_1", "missing (expected option_0 .. option_K-1, K >= 2)"
        )
    if ctx.n_options is None:
        ctx.n_options = n
    if n != ctx.n_options:
        raise _ItemError(f"option_{min(n, ctx.n_options)}", f"has {n} options, expected {ctx.n_options}")
    options = tuple(_string(obj, f"option_{k}", allow_empty=True) for k in range(n))
    answer = _integer(obj, "answer")
    if not 0 <= answer < n:
        raise _ItemError("answer", f"{answer} is not an option index in [0, {n})")
    return ChoiceItem(_string(obj, "video"), _string(obj, "question", allow_empty=True), options, answer)


_PARSERS: dict[str, tuple[type, Callable[[Any, _FileContext], Any]]] = {
    "pretrain": (PretrainItem, _parse_pretrain),
    "retrieval": (CaptionItem, _parse_caption),
    "caption": (CaptionItem, _parse_caption),
    "qa_open": (OpenQAItem, _parse_open_qa),
    "qa_choice": (ChoiceItem, _parse_choice),
}


# ----------------------------------------------------------------------------------------------- loading


ALPRO_SPLITS = {"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"}


def is_alpro_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is ALPRO's annotation folder (``txt/`` holding ``{train,val,test}.jsonl``)."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in ALPRO_SPLITS.values())


def read_alpro_folder(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """ALPRO's ``txt/{train,val,test}.jsonl`` as this module's object (read as they are, one JSON per line):

    * retrieval / captions: ``{"clip_name", "caption"}`` -> ``{"video", "caption"}``;
    * open-ended QA (MSRVTT-QA, MSVD-QA): ``{"video_id", "question", "answer" (a string), "answer_type",
      "question_id"}`` -> ``{"video", "question", "answer" (label), "answer_text", "type"}``, labels from
      ``train_ans2label.json`` beside the folder or its parent (ALPRO's answer list), else the train answers.
    """
    path = Path(path)
    if kind not in ("retrieval", "qa_open"):
        raise AnnotationError(path, f"ALPRO's jsonl folders hold retrieval or open-ended QA, not {kind!r}")
    splits: dict[str, Any] = {}
    for split, name in ALPRO_SPLITS.items():
        file = path / name
        if file.is_file():
            splits[split] = read_jsonl(file)
    if kind == "retrieval":
        return {
            split: [{"video": r.get("clip_name"), "caption": r.get("caption")} for r in rows]
            for split, rows in splits.items()
        }
    ans2label = next(
        (read_json_object(p) for p in (path / "train_ans2label.json", path.parent / "train_ans2label.json")
         if p.is_file()),
        None,
    )  # fmt: skip
    if ans2label is None:
        answers = dict.fromkeys(str(r.get("answer")) for r in splits.get("train", []))
        ans2label = {a: i for i, a in enumerate(answers)}
    out: dict[str, Any] = {"ans2label": ans2label}
    for split, rows in splits.items():
        out[split] = [
            {
                "video": r.get("video_id"),
                "question": r.get("question"),
                "answer": ans2label.get(str(r.get("answer")), -1),
                "answer_text": r.get("answer"),
                **({"type": r["answer_type"]} if "answer_type" in r else {}),
            }
            for r in rows
        ]
    return out


def _qa_labels(path: Path, obj: Mapping[str, Any]) -> tuple[list[str] | None, dict[str, int] | None]:
    """The top-level ``vocab`` / ``ans2label`` of an open-ended QA file (each derived from the other)."""
    vocab, ans2label = obj.get("vocab"), obj.get("ans2label")
    if vocab is not None and not (isinstance(vocab, list) and all(isinstance(a, str) for a in vocab)):
        raise AnnotationError(path, "must be a list of answer strings", key="vocab")
    if ans2label is not None and not (
        isinstance(ans2label, dict)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in ans2label.values())
    ):
        raise AnnotationError(path, "must map answer strings to integer labels", key="ans2label")
    if vocab is None and ans2label is not None:
        vocab = [a for a, _ in sorted(ans2label.items(), key=lambda kv: kv[1])]
    if ans2label is None and vocab is not None:
        ans2label = {a: i for i, a in enumerate(vocab)}
    return vocab, ans2label


def _split_entries(path: Path, kind: str, split: str, value: Any) -> list[Any]:
    """The raw items of one split: a list, or (video, captions) pairs for the pretraining dict."""
    if kind == "pretrain":
        if not isinstance(value, dict):
            raise AnnotationError(
                path, f"expected {{video: [captions]}}, got {_type_name(value)}", split=split
            )
        return list(value.items())
    if not isinstance(value, list):
        raise AnnotationError(path, f"expected a list of items, got {_type_name(value)}", split=split)
    return value


def load_annotations(
    path: str | os.PathLike,
    kind: str,
    splits: Sequence[str] | None = None,
    video_ids: Collection[str] | None = None,
    on_error: OnError = "raise",
    n_options: int | None = None,
) -> AnnotationFile:
    """Read and validate an annotation file of the given ``kind`` (one of :data:`KINDS`).

    ``splits``: the splits to load (each must exist); default: whichever of train/val/test the file has.
    ``video_ids``: the known ids (e.g. the frame TSV's keys); an item with another video is an error.
    ``on_error="skip"`` skips bad items (counted in ``.skipped``, logged); file-level problems always raise.
    ``n_options``: the option count every ``qa_choice`` item must have (default: that of the first item).
    """
    if kind not in _PARSERS:
        raise ValueError(f"unknown annotation kind {kind!r}; expected one of {', '.join(KINDS)}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    path = Path(path)
    if kind == "paragraph" and not is_audio_source(path):
        obj = read_paragraph_source(path)
    elif kind == "classification":
        obj = read_classification_source(path)
    elif (public := read_audio_source(path, kind)) is not None:  # VALOR, AudioCaps, Clotho, FAVD, MUSIC-AVQA
        obj = public
    else:
        obj = read_alpro_folder(path, kind) if is_alpro_folder(path) else read_json_object(path)
    present = [s for s in SPLITS if s in obj]
    unknown = sorted(set(obj) - set(SPLITS) - set(METADATA_KEYS.get(kind, ())))
    if unknown:
        logger.warning("%s: ignoring top-level keys %s (not a split of a %s file)", path, unknown, kind)
    wanted = list(splits) if splits is not None else present
    if not wanted:
        raise AnnotationError(
            path, f"has none of the splits {', '.join(SPLITS)} (top-level keys: {sorted(obj)})"
        )
    for split in wanted:
        if split not in obj:
            raise AnnotationError(path, f"has no split '{split}' (it has: {', '.join(present) or 'none'})")
    if video_ids is not None and not isinstance(video_ids, AbstractSet | Mapping):
        video_ids = frozenset(video_ids)

    vocab, ans2label = _qa_labels(path, obj) if kind == "qa_open" else (None, None)
    label2ans = {label: answer for answer, label in ans2label.items()} if ans2label else None
    ctx = _FileContext(label2ans=label2ans, n_options=n_options)
    record_type, parse = _PARSERS[kind]

    loaded: dict[str, RecordList] = {}
    skipped: dict[str, int] = {}
    for split in wanted:
        entries = _split_entries(path, kind, split, obj[split])
        records, errors = [], []
        for index, raw in enumerate(entries):
            try:
                record = parse(raw, ctx)
                if video_ids is not None and record.video not in video_ids:
                    raise _ItemError(
                        "video",
                        f"video '{record.video}' is not among the given video ids "
                        f"(e.g. the frame TSV's keys)",
                    )
            except _ItemError as e:
                key = raw[0] if kind == "pretrain" else e.key  # a pretraining item's key is its video id
                if on_error == "raise":
                    hint = "; fix the file, or skip such items with on_error='skip'"
                    raise AnnotationError(path, f"{e}{hint}", split=split, index=index, key=key) from None
                errors.append(AnnotationError(path, str(e), split=split, index=index, key=key))
                continue
            records.append(record)
        loaded[split] = RecordList(record_type, records)
        skipped[split] = len(errors)
        if errors:
            logger.warning(
                "skipped %d of %d items of split '%s' (first: %s)",
                len(errors),
                len(entries),
                split,
                errors[0],
            )
    return AnnotationFile(path, kind, loaded, skipped, vocab, ans2label)


def coco_references(items: Iterable[CaptionItem], description: str = "caption references") -> dict[str, Any]:
    """The COCO-format reference structure that caption scorers (pycocoevalcap) read.

    Every video becomes one "image" (its id is the video id); every item one annotation.
    """
    images: dict[str, None] = {}
    annotations = []
    for i, item in enumerate(items):
        images.setdefault(item.video)
        annotations.append({"image_id": item.video, "id": i, "caption": item.text})
    return {
        "info": {"description": description},
        "licenses": [],
        "type": "captions",
        "images": [{"id": video} for video in images],
        "annotations": annotations,
    }


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Annotation JSON (UTF-8, non-ASCII kept), written atomically by :func:`lib.utils.atomic.write_json`."""
    return write_json(path, obj, ensure_ascii=False, indent=indent)


# --------------------------------------------------------------------------------- multi-task leak filter

_FAMILY_FILE = re.compile(r"^txt_(?P<family>[^-]+)-.+\.json$")


@dataclass
class FileLeakReport:
    """What the leak filter removed from the train split of one file: items of val/test videos
    (``removed_ids``) and items whose video has no frames (``no_frames_ids``, ``n_no_frames`` items)."""

    file: str
    output: str
    train_before: int
    train_after: int
    removed_ids: list[str]
    no_frames_ids: list[str] = field(default_factory=list)
    n_no_frames: int = 0


@dataclass
class LeakReport:
    """The leak filter's result for one dataset family."""

    dataset: str
    n_eval_ids: int
    files: list[FileLeakReport]
    frames: str = "not checked"  # where the ids with frames came from (the reference: img_D.id2lineidx.pkl)

    @property
    def n_removed(self) -> int:
        return sum(f.train_before - f.train_after for f in self.files)

    @property
    def n_no_frames(self) -> int:
        return sum(f.n_no_frames for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n_eval_ids": self.n_eval_ids,
            "n_removed_items": self.n_removed,
            "n_no_frames_items": self.n_no_frames,
            "frames": self.frames,
            "files": [vars(f) for f in self.files],
        }


def annotation_families(data_dir: str | os.PathLike) -> list[str]:
    """The dataset families D that have ``txt_D-*.json`` files in ``data_dir``."""
    names = (p.name for p in Path(data_dir).glob("txt_*-*.json"))
    return sorted({m["family"] for m in map(_FAMILY_FILE.match, names) if m})


def _split_videos(path: Path, split: str, value: Any) -> list[str]:
    """The video id of every entry of a split (dict split: its keys; list split: each item's "video")."""
    if isinstance(value, dict):
        return list(value)
    if not isinstance(value, list):
        raise AnnotationError(path, f"expected a list or dict split, got {_type_name(value)}", split=split)
    videos = []
    for index, item in enumerate(value):
        try:
            videos.append(_string(_as_object(item), "video"))
        except _ItemError as e:
            raise AnnotationError(path, str(e), split=split, index=index, key=e.key) from None
    return videos


def _without_videos(value: Any, videos: list[str], drop: AbstractSet[str]) -> Any:
    if isinstance(value, dict):
        return {video: captions for video, captions in value.items() if video not in drop}
    return [item for item, video in zip(value, videos) if video not in drop]


CAPTION_FOLDERS = {"msrvtt": "MSRVTT-v2", "msvd": "MSVD"}
"""SwinBERT's captioning folder of a family: videos of its ``{val,test}.caption_coco_format.json`` are eval
videos."""


def videos_with_frames(data_dir: str | os.PathLike, dataset: str) -> tuple[set[str] | None, str]:
    """The ids of the family's videos that have frames, and where they came from: the keys of
    ``img_{dataset}.id2lineidx.pkl`` (what the reference read), else column 0 of ``img_{dataset}.tsv`` (id
    stems, as the map keys them), else None (nothing to check against)."""
    pkl, tsv = Path(data_dir) / f"img_{dataset}.id2lineidx.pkl", Path(data_dir) / f"img_{dataset}.tsv"
    if pkl.is_file():
        return set(load_id2lineidx(pkl)), str(pkl)
    if tsv.is_file():
        with TSVFile(tsv) as table:
            keys = table.keys()
        return {Path(key).stem for key in keys}, str(tsv)
    return None, f"not checked (neither {pkl.name} nor {tsv.name} in {data_dir})"


def caption_eval_videos(data_dir: str | os.PathLike, dataset: str) -> set[str]:
    """Video ids (``Path(image_id).stem``) of the family's SwinBERT val/test caption references, if any."""
    folder = Path(data_dir) / CAPTION_FOLDERS.get(dataset, "")
    videos: set[str] = set()
    for split in EVAL_SPLITS if dataset in CAPTION_FOLDERS else ():
        path = folder / f"{split}.caption_coco_format.json"
        if path.is_file():
            for index, item in enumerate(read_json_object(path).get("annotations", [])):
                if not isinstance(item, dict) or "image_id" not in item:
                    raise AnnotationError(path, "an annotation without image_id", "annotations", index)
                videos.add(Path(str(item["image_id"])).stem)
    return videos


def filter_test_leaks(
    data_dir: str | os.PathLike,
    dataset: str,
    output_dir: str | os.PathLike,
    check_frames: bool = True,
) -> LeakReport:
    """Copy every ``txt_{dataset}-*.json`` with the family's val/test videos removed from the train splits.

    Eval videos: those of the val/test splits of every ``txt_{dataset}-*.json`` and of SwinBERT's caption
    references (:func:`caption_eval_videos`). With ``check_frames``, train items whose video has no frames
    (:func:`videos_with_frames`, when the family has a frame table) are removed too and counted apart, as
    the reference's filter kept only ids of ``img_{dataset}.id2lineidx.pkl``. The originals are never
    modified; ``output_dir`` must differ from ``data_dir``.
    """
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    if output_dir.resolve() == data_dir.resolve():
        raise ValueError(
            f"output dir {output_dir} is the data dir: the filter never edits files in place; "
            f"choose another --output_dir"
        )
    paths = sorted(data_dir.glob(f"txt_{dataset}-*.json"))
    if not paths:
        raise FileNotFoundError(f"no annotation files txt_{dataset}-*.json in {data_dir}")
    contents = {path: read_json_object(path) for path in paths}

    eval_ids: set[str] = caption_eval_videos(data_dir, dataset)
    for path, obj in contents.items():
        for split in EVAL_SPLITS:
            if split in obj:
                eval_ids.update(_split_videos(path, split, obj[split]))
    framed, frames_source = videos_with_frames(data_dir, dataset) if check_frames else (None, "not checked")

    output_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    for path, obj in contents.items():
        filtered = dict(obj)
        report = FileLeakReport(str(path), "", 0, 0, [])
        if "train" in obj:
            videos = _split_videos(path, "train", obj["train"])
            frameless = {v for v in videos if v not in eval_ids and framed is not None and v not in framed}
            filtered["train"] = _without_videos(obj["train"], videos, eval_ids | frameless)
            report.train_before, report.train_after = len(obj["train"]), len(filtered["train"])
            report.removed_ids = sorted({video for video in videos if video in eval_ids})
            report.no_frames_ids = sorted(frameless)
            report.n_no_frames = sum(video in frameless for video in videos)
        report.output = str(write_json_atomic(output_dir / path.name, filtered))
        reports.append(report)
    return LeakReport(dataset, len(eval_ids), reports, frames_source)


# ------------------------------------------------------------------------------ paragraphs (long-form video)


@dataclass(frozen=True, slots=True)
class ParagraphItem:
    """A video with a paragraph: its sentences in order and, where known, each one's ``[start, end]`` in
    seconds and the video's duration (the spans of long-form clips, :mod:`lib.data.multi_clip`)."""

    video: str
    sentences: tuple[str, ...]
    timestamps: tuple[tuple[float, float], ...] | None = None
    duration: float | None = None

    def __post_init__(self) -> None:  # RecordList rebuilds nested lists: keep (start, end) pairs as tuples
        if self.timestamps is not None:
            object.__setattr__(self, "timestamps", tuple((float(a), float(b)) for a, b in self.timestamps))

    @property
    def text(self) -> str:
        return " ".join(self.sentences)


def _number(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _ItemError(key, f"expected a number, got {_type_name(value)} {value!r:.60}")
    return float(value)


def _parse_paragraph(raw: Any, ctx: _FileContext) -> ParagraphItem:
    """Sentences (a string, or a list) with optional timestamps (one ``[start, end]`` per sentence: clipped to
    ``[0, duration]`` and put in order, as ActivityNet's has a few reversed or past the end) and duration.
    Empty sentences are dropped with their timestamps."""
    obj = _as_object(raw)
    key = next((k for k in ("sentences", "caption", "text") if k in obj), "sentences")  # text: LF-VILA's
    sentences = _get(obj, key)
    sentences = [sentences] if isinstance(sentences, str) else sentences
    if not isinstance(sentences, list) or not all(isinstance(x, str) for x in sentences):
        raise _ItemError(key, f"expected a string or a list of strings, got {sentences!r:.60}")
    duration = None if obj.get("duration") is None else _number(obj["duration"], "duration")
    timestamps = obj.get("timestamps")
    spans = None
    if timestamps is not None:
        if not isinstance(timestamps, list) or len(timestamps) != len(sentences):
            raise _ItemError("timestamps", f"expected one [start, end] per sentence ({len(sentences)})")
        spans = []
        for pair in timestamps:
            if not isinstance(pair, list) or len(pair) != 2:
                raise _ItemError("timestamps", f"expected [start, end], got {pair!r:.60}")
            start, end = sorted(_number(t, "timestamps") for t in pair)
            if duration is not None:
                start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
            spans.append((start, end))
    keep = [i for i, sentence in enumerate(sentences) if sentence.strip()]
    if not keep:
        raise _ItemError(key, "has no non-empty sentence")
    return ParagraphItem(
        _string(obj, "video"),
        tuple(sentences[i].strip() for i in keep),
        None if spans is None else tuple(spans[i] for i in keep),
        duration,
    )


_PARSERS["paragraph"] = (ParagraphItem, _parse_paragraph)

ACTIVITYNET_SPLITS = {"train": "train.json", "val": "val_1.json", "test": "val_2.json"}
"""ActivityNet Captions' files. Paragraph-retrieval papers (ClipBERT, Frozen, LF-VILA) report val_1: "val"."""
DIDEMO_CE_CAPTIONS = "raw-captions.pkl"
LFVILA_SPLITS = {"train": "train.jsonl", "val": "val.jsonl", "test": "test.jsonl"}


def read_paragraph_source(path: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """Paragraph annotations as ``{split: [{"video", "sentences", "timestamps"?, "duration"?}]}``, from

    * our JSON file (the ``paragraph`` row of the module's table), as it is;
    * ActivityNet Captions: a folder with ``train.json`` / ``val_1.json`` / ``val_2.json`` (splits train /
      val / test) or one of those files, each ``{video_id: {"duration", "timestamps", "sentences"}}``;
    * DiDeMo as the collaborative-experts split ships it: a folder with ``raw-captions.pkl`` (``{video:
      [[word, ...], ...]}``: each description as a word list, read without running code) and
      ``{train,val,test}_list.txt`` (one video per line; the name up to its first dot is the id, as there);
      the descriptions of a video form its paragraph, without timestamps;
    * LF-VILA's jsonl (one ``{"clip_id", "text"}`` per line, ``text`` a string or a list of sentences): a
      folder with ``{train,val,test}.jsonl`` or one such file (its stem names the split)."""
    path = Path(path)
    if path.is_dir():
        if (path / DIDEMO_CE_CAPTIONS).is_file():
            return _read_didemo_ce(path)
        if any((path / name).is_file() for name in ACTIVITYNET_SPLITS.values()):
            files = {split: path / name for split, name in ACTIVITYNET_SPLITS.items()}
            return {split: _activitynet_items(f) for split, f in files.items() if f.is_file()}
        files = {split: path / name for split, name in LFVILA_SPLITS.items()}
        if not any(f.is_file() for f in files.values()):
            raise AnnotationError(
                path, "no paragraph annotations here (ActivityNet, DiDeMo-CE or LF-VILA files)"
            )
        return {split: _lfvila_items(f) for split, f in files.items() if f.is_file()}
    if path.suffix == ".jsonl":
        stems = {split: name.removesuffix(".jsonl") for split, name in LFVILA_SPLITS.items()}
        return {_split_of(path, stems): _lfvila_items(path)}
    obj = read_json_object(path)
    if any(split in obj for split in SPLITS):
        return obj
    names = {s: n.removesuffix(".json") for s, n in ACTIVITYNET_SPLITS.items()}
    return {_split_of(path, names): _activitynet_items(path, obj)}


def _split_of(path: Path, stems: Mapping[str, str]) -> str:
    for split, stem in stems.items():
        if path.stem == stem:
            return split
    raise AnnotationError(
        path, f"cannot tell the split from the file name (expected one of {sorted(stems.values())})"
    )


def _activitynet_items(path: Path, obj: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    obj = read_json_object(path) if obj is None else obj
    items = []
    for video, entry in obj.items():
        if not isinstance(entry, dict):
            raise AnnotationError(
                path, f"expected {{duration, timestamps, sentences}}, got {_type_name(entry)}", key=video
            )
        items.append({"video": video, **{k: entry.get(k) for k in ("sentences", "timestamps", "duration")}})
    return items


def _lfvila_items(path: Path) -> list[Any]:
    """LF-VILA's rows with ``clip_id`` named ``video`` (the text keeps its name, ``text``)."""
    return [
        {"video": row.get("clip_id"), **{k: v for k, v in row.items() if k != "clip_id"}}
        if isinstance(row, dict)
        else row
        for row in read_jsonl(path)
    ]


def _read_didemo_ce(path: Path) -> dict[str, list[dict[str, Any]]]:
    from lib.data.tsv import TSVError, _load_plain_pickle  # the one unpickler that runs no code

    try:
        captions = _load_plain_pickle(path / DIDEMO_CE_CAPTIONS)
    except TSVError as e:
        raise AnnotationError(path / DIDEMO_CE_CAPTIONS, str(e)) from None
    if not isinstance(captions, dict):
        raise AnnotationError(
            path / DIDEMO_CE_CAPTIONS, f"expected {{video: [description, ...]}}, got {_type_name(captions)}"
        )
    out: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        listing = path / f"{split}_list.txt"
        if not listing.is_file():
            continue
        videos = [line.strip().split(".")[0] for line in listing.read_text(encoding="utf-8").splitlines()]
        out[split] = [{"video": v, "sentences": _descriptions(captions.get(v, []))} for v in videos if v]
    return out


def _descriptions(value: Any) -> Any:
    """DiDeMo-CE's descriptions of a video (word lists) as sentences; anything else is left to the parser."""
    if not isinstance(value, list):
        return value
    return [" ".join(map(str, d)) if isinstance(d, list | tuple) else d for d in value]


# ------------------------------------------------------------------- long-form QA (subtitles) and classes


@dataclass(frozen=True, slots=True)
class LongChoiceItem:
    """A multiple-choice question about a long video, with the subtitle text around it (may be empty)."""

    video: str
    question: str
    options: tuple[str, ...]
    answer: int
    subtitle: str = ""


TVQA_KEYS = {"vid_name": "video", "q": "question", "answer_idx": "answer", "sub": "subtitle"}
"""TVQA / How2QA (HERO) row keys -> ours; options ``a0``, ``a1``, ... become ``option_0``, ...."""


def _subtitle_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        parts = [v.get("text") if isinstance(v, dict) else v for v in value]
        if all(isinstance(p, str) for p in parts):
            return " ".join(p.strip() for p in parts if p.strip())
    raise _ItemError("subtitle", f"expected a string or a list of strings / {{text}}, got {value!r:.60}")


def _parse_long_choice(raw: Any, ctx: _FileContext) -> LongChoiceItem:
    obj = dict(_as_object(raw))
    if "vid_name" in obj or "a0" in obj:  # TVQA / How2QA style
        obj = {TVQA_KEYS.get(k, k): v for k, v in obj.items()}
        k = 0
        while f"a{k}" in obj:
            obj[f"option_{k}"] = obj.pop(f"a{k}")
            k += 1
    base = _parse_choice(obj, ctx)
    subtitle = _subtitle_text(obj.get("subtitle", obj.get("subtitles")))
    return LongChoiceItem(base.video, base.question, base.options, base.answer, subtitle)


@dataclass(frozen=True, slots=True)
class ClassItem:
    """A video and its class name (the words the MLM head predicts)."""

    video: str
    label: str


def _parse_class(raw: Any, ctx: _FileContext) -> ClassItem:
    obj = _as_object(raw)
    return ClassItem(_string(obj, "video"), " ".join(_string(obj, "label").split()))


_PARSERS["long_qa"] = (LongChoiceItem, _parse_long_choice)
_PARSERS["classification"] = (ClassItem, _parse_class)

COIN_SUBSETS = {"training": "train", "validation": "val", "testing": "test"}


def class_words(name: str) -> str:
    """A class name as words: COIN's CamelCase ("MakeFrenchFries") -> "make french fries"."""
    return " ".join(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name.replace("_", " ")).lower().split())


def read_classification_source(path: str | os.PathLike) -> dict[str, Any]:
    """Classification annotations as ``{split: [{"video", "label"}]}``: our file as it is, or COIN's
    ``COIN.json`` (``{"database": {video: {"class", "subset", ...}}}``, subsets training / testing; class
    names become words with :func:`class_words`)."""
    path = Path(path)
    obj = read_json_object(path)
    if "database" not in obj:
        return obj
    database = obj["database"]
    if not isinstance(database, dict):
        raise AnnotationError(path, f"expected {{video: {{class, subset}}}}, got {_type_name(database)}",
                              key="database")  # fmt: skip
    out: dict[str, list[Any]] = {}
    for video, entry in database.items():
        if not isinstance(entry, dict) or entry.get("subset") not in COIN_SUBSETS:
            raise AnnotationError(
                path, f"expected {{class, subset: {' | '.join(COIN_SUBSETS)}}}, got {entry!r:.80}", key=video
            )
        label = entry.get("class")
        item = {"video": video, "label": class_words(label) if isinstance(label, str) else label}
        out.setdefault(COIN_SUBSETS[entry["subset"]], []).append(item)
    return out
