"""The error every annotation reader raises and the two JSON readers they share (:mod:`lib.data.annotations`,
:mod:`lib.data.audio_annotations`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class AnnotationError(ValueError):
    """A problem in an annotation file, located by file, split, item index and key."""

    def __init__(
        self,
        path: str | os.PathLike,
        message: str,
        split: str | None = None,
        index: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path, self.split, self.index, self.key = Path(path), split, index, key
        where = [f"split '{split}'"] if split is not None else []
        where += [f"item {index}"] if index is not None else []
        where += [f"key '{key}'"] if key is not None else []
        super().__init__(f"{path}: {', '.join(where) + ': ' if where else ''}{message}")


def type_name(value: Any) -> str:
    """A JSON value's type as messages name it."""
    return "null" if value is None else type(value).__name__


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; errors name the file (and the line for bad JSON)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise AnnotationError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AnnotationError(path, f"not valid JSON ({e})") from None


def read_json_object(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file whose top level must be an object (:func:`read_json`)."""
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise AnnotationError(path, f"top level must be a JSON object with splits, got {type_name(obj)}")
    return obj


def read_jsonl(path: Path) -> list[Any]:
    """One JSON value per non-blank line (ALPRO's and LF-VILA's annotation files)."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise AnnotationError(path, f"line {line_no} is not valid JSON ({e})") from None
    return rows
