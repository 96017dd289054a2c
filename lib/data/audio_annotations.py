"""The audio datasets' annotation files read as their releases ship them, converted to the objects of
:mod:`lib.data.annotations` (``{split: [items]}``), keyed by video / audio id. Layouts (a folder, or one
of its split files where noted) and the keys read:

* VALOR: ``txt_mapper*.json`` ``{id: caption | [captions]}`` or, for QA, ``{id: [{"question", "answer"}]}``
  (``answer`` a string, or an option index with ``"choice": [options]``); the id lists ``{split}_id*.json``
  (lists of ids) name each split's videos; a mapper may be per split (``txt_mapper_vqa_train.json``). A
  COCO-style ``caption_annotation.json`` / ``cap_anno.json`` (``annotations: [{image_id, caption}]``) gives
  the test references of captioning (VALOR scores against it).
* AudioCaps: ``{train,val,test}.csv`` (or one), ``audiocap_id,youtube_id,start_time,caption``; the id is
  ``youtube_id`` (one clip per YouTube video).
* Clotho: ``clotho_captions_{development,validation,evaluation}.csv`` (train / val / test; or one),
  ``file_name,caption_1..caption_5``; the id is the file name without its extension.
* FAVDBench: AVLFormer's ``metadata/{train,val,test}.caption_coco_format.json`` (or one): a list of
  ``{"image_id", "caption"}`` (or COCO's ``{"annotations": [...]}``), each caption a paragraph; the id is
  ``image_id`` without folder or extension.
* MUSIC-AVQA: ``avqa-{train,val,test}.json`` (or one): ``[{"video_id", "question_content", "templ_values",
  "anser", "type", ...}]``; each ``<...>`` placeholder of the question is filled, in order, by the next of
  ``templ_values`` (as the dataset's own loader does); ``type`` (``["Audio", "Counting"]``) becomes the
  question type ``Audio_Counting``.

Captions become ``retrieval`` / ``caption`` items (one per caption), ``pretrain`` (``{id: [captions]}``) or
``paragraph`` items; questions ``qa_open`` items (labels: the train answers in order of first appearance; an
answer never seen in train gets label -1) or, for VALOR's ``choice`` questions, ``qa_choice`` items. Every
problem is an :class:`AnnotationError` naming the file, the row (CSV line or item) and the key.
"""

from __future__ import annotations

import ast
import contextlib
import csv
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lib.data.annotation_base import AnnotationError, read_json, type_name

SPLITS = ("train", "val", "test")
CAPTION_KINDS = ("retrieval", "caption", "pretrain", "paragraph")
AUDIOCAPS_FILES = {"train": "train.csv", "val": "val.csv", "test": "test.csv"}
AUDIOCAPS_COLUMNS = ("audiocap_id", "youtube_id", "start_time", "caption")
CLOTHO_FILES = {
    "train": "clotho_captions_development.csv",
    "val": "clotho_captions_validation.csv",
    "test": "clotho_captions_evaluation.csv",
}
CLOTHO_CAPTIONS = tuple(f"caption_{k}" for k in range(1, 6))
FAVD_FILES = {split: f"{split}.caption_coco_format.json" for split in SPLITS}
AVQA_FILES = {split: f"avqa-{split}.json" for split in SPLITS}
VALOR_REFERENCES = ("caption_annotation.json", "cap_anno.json")
PLACEHOLDER = re.compile(r"<[^<>]*>")

Pairs = dict[str, list[tuple[str, str]]]  # split -> (id, caption) in file order


# ----------------------------------------------------------------------------------------- detection


def _split_files(path: Path, names: dict[str, str]) -> dict[str, Path] | None:
    """The files of a folder (or the one file) of a layout whose split files are ``names``; None if not it."""
    if path.is_dir():
        found = {split: path / name for split, name in names.items() if (path / name).is_file()}
        return found or None
    split = next((s for s, name in names.items() if path.name == name), None)
    return {split: path} if split is not None and path.is_file() else None


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f), [])


def _audiocaps_files(path: Path) -> dict[str, Path] | None:
    files = _split_files(path, AUDIOCAPS_FILES)
    if files and all(_csv_header(f)[:1] == ["audiocap_id"] for f in files.values()):
        return files
    return None


def _valor_mappers(path: Path) -> list[Path]:
    return sorted(path.glob("txt_mapper*.json")) if path.is_dir() else []


def is_audio_source(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds one of the layouts of this module (module docstring)."""
    return _layout(Path(path)) is not None


def _layout(path: Path) -> str | None:
    if _valor_mappers(path):
        return "valor"
    if _audiocaps_files(path):
        return "audiocaps"
    for name, files in (("clotho", CLOTHO_FILES), ("favd", FAVD_FILES), ("avqa", AVQA_FILES)):
        if _split_files(path, files):
            return name
    return None


def read_audio_source(path: str | os.PathLike, kind: str) -> dict[str, Any] | None:
    """The annotations at ``path`` as an object of ``kind`` (:mod:`lib.data.annotations`), or None when
    ``path`` is none of this module's layouts."""
    path = Path(path)
    layout = _layout(path)
    if layout is None:
        return None
    if layout == "valor":
        return _read_valor(path, kind)
    if layout == "avqa":
        files = _split_files(path, AVQA_FILES) or {}
        return _questions_object(path, kind, {s: _avqa_questions(f) for s, f in files.items()})
    readers: dict[str, Callable[[Path], Pairs]] = {
        "audiocaps": lambda p: {s: _audiocaps_pairs(f) for s, f in (_audiocaps_files(p) or {}).items()},
        "clotho": lambda p: {s: _clotho_pairs(f) for s, f in (_split_files(p, CLOTHO_FILES) or {}).items()},
        "favd": lambda p: {s: _coco_pairs(f) for s, f in (_split_files(p, FAVD_FILES) or {}).items()},
    }
    return _captions_object(path, kind, readers[layout](path))


# ------------------------------------------------------------------------------------------- captions


def _captions_object(path: Path, kind: str, pairs: Pairs) -> dict[str, Any]:
    """(id, caption) pairs per split as an object of a caption ``kind``."""
    if kind not in CAPTION_KINDS:
        raise AnnotationError(
            path, f"holds captions, which make {' / '.join(CAPTION_KINDS)} items, not {kind!r}"
        )
    if kind == "pretrain":
        grouped: dict[str, dict[str, list[str]]] = {}
        for split, rows in pairs.items():
            for video, caption in rows:
                grouped.setdefault(split, {}).setdefault(video, []).append(caption)
        return grouped
    text = "sentences" if kind == "paragraph" else "caption"
    return {split: [{"video": v, text: c} for v, c in rows] for split, rows in pairs.items()}


def _csv_rows(path: Path, columns: Iterable[str]) -> Iterable[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file with a header that must hold ``columns``."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise AnnotationError(
                path, f"the header lacks {', '.join(missing)} (it has: {', '.join(reader.fieldnames or [])})"
            )
        for row in reader:
            yield reader.line_num, row


def _cell(path: Path, line: int, row: dict[str, str], key: str) -> str:
    value = (row.get(key) or "").strip()
    if not value:
        raise AnnotationError(path, f"line {line}: '{key}' is empty; fill it or delete the row", key=key)
    return value


def _audiocaps_pairs(path: Path) -> list[tuple[str, str]]:
    return [
        (_cell(path, line, row, "youtube_id"), _cell(path, line, row, "caption"))
        for line, row in _csv_rows(path, AUDIOCAPS_COLUMNS)
    ]


def _clotho_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line, row in _csv_rows(path, ("file_name", *CLOTHO_CAPTIONS)):
        video = Path(_cell(path, line, row, "file_name")).stem
        pairs += [(video, _cell(path, line, row, key)) for key in CLOTHO_CAPTIONS]
    return pairs


def _coco_pairs(path: Path, field: str = "caption") -> list[tuple[str, str]]:
    """``[{"image_id", "caption"}]`` (or ``{"annotations": [...]}``); the id without folder or extension."""
    obj = read_json(path)
    items = obj.get("annotations") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise AnnotationError(path, f"expected a list of {{image_id, caption}}, got {type_name(items)}")
    pairs = []
    for index, item in enumerate(items):
        for key in ("image_id", field):
            value = item.get(key) if isinstance(item, dict) else None
            if not (isinstance(value, str | int) and str(value).strip()):
                raise AnnotationError(
                    path, f"expected a non-empty {key}, got {value!r:.60}", index=index, key=key
                )
        pairs.append((Path(str(item["image_id"])).stem, item[field].strip()))
    return pairs


# ---------------------------------------------------------------------------------------------- VALOR


def _valor_file(path: Path, pattern: str, split: str, qa: bool) -> Path | None:
    """The file of ``split`` among ``path/pattern``: a split's own (named ``*_{split}*``) before a shared one;
    with several, the QA one (``qa`` in its name) for questions and the other for captions."""
    found = sorted(path.glob(pattern))
    own = [f for f in found if re.search(rf"(^|_){split}(_|\.|$)", f.name)]
    shared = [f for f in found if not any(re.search(rf"(^|_){s}(_|\.|$)", f.name) for s in SPLITS)]
    for group in (own, shared):
        fitting = [f for f in group if ("qa" in f.stem) == qa] or (group if len(group) == 1 else [])
        if len(fitting) > 1:
            raise AnnotationError(
                path, f"several files could be the {split} split's: {[f.name for f in fitting]}"
            )
        if fitting:
            return fitting[0]
    return None


def _id_list(path: Path) -> list[str]:
    ids = read_json(path)
    if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
        raise AnnotationError(path, f"expected a list of ids, got {str(ids)[:60]}")
    return [str(i) for i in ids]


def _read_valor(path: Path, kind: str) -> dict[str, Any]:
    qa = kind in ("qa_open", "qa_choice")
    splits: dict[str, tuple[list[str], Path]] = {}
    for split in SPLITS:
        ids = _valor_file(path, f"{split}_id*.json", split, qa)
        mapper = _valor_file(path, "txt_mapper*.json", split, qa)
        if ids is not None and mapper is not None:
            splits[split] = (_id_list(ids), mapper)
    if not splits:
        raise AnnotationError(
            path, "VALOR folder without any {train,val,test}_id*.json id list for its txt_mapper"
        )
    mappers = {mapper: read_json(mapper) for _, mapper in splits.values()}
    for mapper, content in mappers.items():
        if not isinstance(content, dict):
            raise AnnotationError(mapper, f"expected {{id: texts}}, got {type_name(content)}")
    if qa:
        questions = {
            s: list(_valor_questions(mapper, mappers[mapper], ids)) for s, (ids, mapper) in splits.items()
        }
        return _questions_object(path, kind, questions)
    pairs: Pairs = {}
    for split, (ids, mapper) in splits.items():
        pairs[split] = [
            (video, text) for video in ids for text in _valor_texts(mapper, mappers[mapper], video)
        ]
    reference = next((path / n for n in VALOR_REFERENCES if (path / n).is_file()), None)
    if kind == "caption" and reference is not None:
        test_ids = set(splits["test"][0]) if "test" in splits else None
        pairs["test"] = [(v, c) for v, c in _coco_pairs(reference) if test_ids is None or v in test_ids]
    return _captions_object(path, kind, pairs)


def _valor_entry(mapper: Path, content: dict[str, Any], video: str) -> Any:
    if video not in content:
        raise AnnotationError(mapper, "is listed in the split's id list but has no entry here", key=video)
    return content[video]


def _valor_texts(mapper: Path, content: dict[str, Any], video: str) -> list[str]:
    texts = _valor_entry(mapper, content, video)
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise AnnotationError(
            mapper, f"expected a caption or a list of captions, got {texts!r:.60}", key=video
        )
    return texts


def _valor_questions(mapper: Path, content: dict[str, Any], ids: list[str]) -> Iterable[dict[str, Any]]:
    for video in ids:
        entries = _valor_entry(mapper, content, video)
        if not isinstance(entries, list):
            raise AnnotationError(
                mapper, f"expected a list of {{question, answer}}, got {entries!r:.60}", key=video
            )
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict) or "question" not in entry or "answer" not in entry:
                raise AnnotationError(
                    mapper, f"question {index}: expected {{question, answer}}, got {entry!r:.60}", key=video
                )
            yield {"video": video, **entry}


# ------------------------------------------------------------------------------------------- questions


def _avqa_questions(path: Path) -> list[dict[str, Any]]:
    """MUSIC-AVQA's rows as ``{"video", "question" (placeholders filled), "answer", "type"}``."""
    rows = read_json(path)
    if not isinstance(rows, list):
        raise AnnotationError(path, f"expected a list of questions, got {type_name(rows)}")
    out = []
    for index, row in enumerate(rows):
        for key in ("video_id", "question_content", "anser"):
            if (
                not isinstance(row, dict)
                or not isinstance(row.get(key), str | int)
                or not str(row[key]).strip()
            ):
                got = row.get(key) if isinstance(row, dict) else row
                raise AnnotationError(
                    path, f"expected a non-empty {key}, got {got!r:.60}", index=index, key=key
                )
        question = _fill_template(path, index, row["question_content"], row.get("templ_values", "[]"))
        qtype = _literal_list(path, index, "type", row["type"]) if "type" in row else None
        out.append({"video": str(row["video_id"]), "question": question, "answer": str(row["anser"]).strip(),
                    **({"type": "_".join(qtype)} if qtype else {})})  # fmt: skip
    return out


def _literal_list(path: Path, index: int, key: str, value: Any) -> list[str]:
    """A list of strings, or its text as the dataset stores it (``'["cello", "violin"]'``)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(value)  # literals only: nothing is run
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise AnnotationError(path, f"expected a list of strings, got {value!r:.60}", index=index, key=key)
    return value


def _fill_template(path: Path, index: int, question: str, values: Any) -> str:
    """Each ``<...>`` placeholder replaced, in order, by the next template value; the counts must agree."""
    fills = _literal_list(path, index, "templ_values", values)
    slots = PLACEHOLDER.findall(question)
    if len(slots) != len(fills):
        raise AnnotationError(
            path,
            f"question {question!r} has {len(slots)} placeholder(s) {slots} but templ_values has "
            f"{len(fills)} value(s) {fills}; give one value per placeholder, in order",
            index=index,
            key="templ_values",
        )
    it = iter(fills)
    return PLACEHOLDER.sub(lambda _: next(it), question)


def _questions_object(path: Path, kind: str, questions: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Questions per split as a ``qa_open`` object (labels from the train answers) or ``qa_choice`` object."""
    if kind == "qa_choice":
        return {split: [_choice_item(path, q) for q in rows] for split, rows in questions.items()}
    if kind != "qa_open":
        raise AnnotationError(
            path, f"holds questions, which make qa_open (or VALOR's choice: qa_choice) items, not {kind!r}"
        )
    ans2label = {
        a: i for i, a in enumerate(dict.fromkeys(str(q["answer"]) for q in questions.get("train", [])))
    }
    out: dict[str, Any] = {"ans2label": ans2label}
    for split, rows in questions.items():
        out[split] = [
            {"video": q["video"], "question": q["question"], "answer": ans2label.get(str(q["answer"]), -1),
             "answer_text": q["answer"], **({"type": q["type"]} if "type" in q else {})}
            for q in rows
        ]  # fmt: skip
    return out


def _choice_item(path: Path, question: dict[str, Any]) -> dict[str, Any]:
    choices = question.get("choice")
    if not isinstance(choices, list):
        raise AnnotationError(
            path, "a multiple-choice question needs 'choice': [options]", key=question["video"]
        )
    return {"video": question["video"], "question": question["question"], "answer": question["answer"],
            **{f"option_{k}": option for k, option in enumerate(choices)}}  # fmt: skip
