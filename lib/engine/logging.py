"""Run logging: console + `stdout.txt`, one JSON object per line in `log.jsonl`, TensorBoard events, tqdm.

Only rank 0 writes files and shows the progress bar; other ranks print warnings only.
Record kinds in log.jsonl: "train" (every logging step: step, epoch, stream, lr, loss, ...), "eval" (epoch,
step, metrics), "nonfinite" (a skipped step: ids of the offending batches). On resume, records beyond the
checkpoint's step are dropped so the file reads like one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lib.utils.atomic import write_text

LOGGER_NAME = "lavender"
_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def get_logger(name: str | None = None) -> logging.Logger:
    """The project logger (or a child of it, e.g. get_logger("tasks.qa")), configured by `RunLogger`."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")


def truncate_jsonl(path: Path, max_step: int) -> None:
    """Keep only the records of `path` with step <= max_step (atomically)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        if record.get("step", 0) <= max_step:
            kept.append(line)
    write_text(path, "".join(f"{line}\n" for line in kept))


def read_jsonl(path: str | Path, kind: str | None = None) -> list[dict[str, Any]]:
    """Records of a log.jsonl, optionally only one kind."""
    records = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]


class RunLogger:
    """Console/file logging, JSONL metrics and TensorBoard for one run (files on rank 0 only)."""

    _current: RunLogger | None = None  # the logger whose handlers are installed (one run per process)

    def __init__(
        self,
        path_output: str | Path,
        is_main: bool,
        tensorboard: bool = True,
        resume_step: int | None = None,
        append: bool = False,
    ):
        """A fresh log, or (`resume_step`) the log of a resumed run cut at that step, or (`append`) more."""
        self.path_output = Path(path_output)
        self.is_main = is_main
        self.logger = get_logger()
        self._handlers: list[logging.Handler] = []
        self._jsonl = None
        self._tb = None
        self._configure_console()
        if not is_main:
            return
        self.path_output.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(self.path_output / "stdout.txt", mode="a")
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        self._add_handler(file_handler)
        jsonl_path = self.path_output / "log.jsonl"
        if resume_step is not None:
            truncate_jsonl(jsonl_path, resume_step)
        mode = "a" if resume_step is not None or append else "w"
        self._jsonl = open(jsonl_path, mode)  # noqa: SIM115
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.path_output / "tensorboard"), purge_step=resume_step)

    def _configure_console(self) -> None:
        if RunLogger._current is not None:
            RunLogger._current.close()
        RunLogger._current = self
        self.logger.setLevel(logging.INFO if self.is_main else logging.WARNING)
        self.logger.propagate = False
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(_FORMAT))
        self._add_handler(console)

    def _add_handler(self, handler: logging.Handler) -> None:
        self.logger.addHandler(handler)
        self._handlers.append(handler)

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def warning(self, msg: str) -> None:
        self.logger.warning(msg)

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to log.jsonl and its numbers to TensorBoard (rank 0)."""
        if not self.is_main:
            return
        if self._jsonl is None:
            raise RuntimeError(f"the run log of {self.path_output} is closed")
        self._jsonl.write(json.dumps(record, default=_jsonable) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            prefix = record.get("kind", "train")
            step = int(record.get("step", 0))
            for key, value in record.items():
                is_number = isinstance(value, int | float) and not isinstance(value, bool)
                if key not in {"step", "kind"} and is_number and math.isfinite(value):
                    self._tb.add_scalar(f"{prefix}/{key}", value, step)
            self._tb.flush()

    def progress(self, iterable: Iterable, total: int, initial: int = 0, desc: str = "") -> Iterable:
        """tqdm on rank 0 (auto-disabled when stderr is not a terminal), the bare iterable elsewhere."""
        if not self.is_main:
            return iterable
        return tqdm(iterable, total=total, initial=initial, desc=desc, dynamic_ncols=True, disable=None)

    def close(self) -> None:
        for handler in self._handlers:
            self.logger.removeHandler(handler)
            handler.close()
        self._handlers.clear()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
