"""Reading the small files a user hands us (a model's ``config.json``, ``args.json``) so that a damaged one is
an error that names it, not a bare ``JSONDecodeError: Expecting value: line 1 column 17``.

Standard library only; nothing here imports from ``lib``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class UnreadableFileError(ValueError):
    """A file is not what it should be (damaged, cut short, another format); the message names it."""


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """The JSON value of ``path``; :class:`UnreadableFileError` naming the file (and ``what`` it should be)
    when it is not UTF-8 JSON. A missing file stays a ``FileNotFoundError``."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UnreadableFileError(
            f"{path}: not a {what} (byte {e.start} is not UTF-8 text); the file is damaged or of another "
            "format: restore it from the original"
        ) from None
    except json.JSONDecodeError as e:
        ends_early = e.pos >= len(data.rstrip())
        cut = " (it ends too early: cut short while copying or writing?)" if ends_early else ""
        raise UnreadableFileError(
            f"{path}: not a valid {what}: {e.msg} at line {e.lineno} column {e.colno}{cut}; the file is "
            "damaged: restore it from the original"
        ) from None
