"""The command line of every ``main_*.py``: ``--help``, then the run, with errors a user can fix printed as
one ``error: ...`` message (exit status 2) instead of a traceback.

``--help`` / ``-h`` prints the usage, the flags LAVENDER users know and every config key with its type,
default, range and help text (:func:`lib.engine.config.help_text`), without importing torch. The config
is validated before anything heavy is imported, so a bad value (``--lr nan``, ``--size_batch 0``) is
reported at once, naming the key. ``--debug`` (or the environment variable ``LAVENDER_DEBUG=1``) lets the
traceback through instead. Errors that are not the user's to fix (bugs) always keep their traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lib.engine.config import ConfigError, help_text, load_config

DEBUG_FLAG = "--debug"
DEBUG_ENV = "LAVENDER_DEBUG"


def is_user_error(e: BaseException) -> bool:
    """Whether the message of ``e`` tells the user what to fix (a config, a file, a checkpoint, a dataset)."""
    if isinstance(e, ConfigError | FileNotFoundError | FileExistsError):
        return True  # without importing torch: a config error is reported at once
    return isinstance(e, user_errors())


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions whose message tells the user what to fix (a config, a file, a checkpoint, a dataset)."""
    from lib.data.annotations import AnnotationError
    from lib.data.tsv import TSVError
    from lib.model.checkpoint import CheckpointError
    from lib.utils.files import UnreadableFileError

    return (
        ConfigError, CheckpointError, AnnotationError, TSVError, UnreadableFileError, FileNotFoundError,
        FileExistsError,
    )  # fmt: skip


def wants_debug(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def main(task: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the registered ``task`` with the command line ``argv`` (default ``sys.argv[1:]``); the exit
    status: 0 done, 2 an error the message explains."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name
    if "-h" in argv or "--help" in argv:
        print(help_text(prog, task), end="")
        return 0
    debug = wants_debug(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        load_config(argv)  # a bad config is reported before torch and the data are loaded
        from lib.tasks.run import run

        run(task, argv)
    except Exception as e:
        if debug or not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
