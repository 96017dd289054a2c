"""Atomic files and folders: a reader sees the old content or the new one, never a half-written file.

Every writer of a file that someone may read while it is written (an index beside its TSV, a checkpoint, a
config, a report) goes through :func:`write_atomic`: the content goes to a temporary file in the same folder
(so the final rename stays on one file system), is flushed and fsynced, and is renamed over ``path``; on any
error the temporary file is removed and an older ``path`` stays as it was. :func:`replace_dir` does the same
for a finished folder.

Every file lands with the permissions of a plain ``open()``: ``0o666`` less the process umask (``0o644``
under the usual umask 022), whatever mode the writer gave its temporary file (safetensors' writer creates
``0o600`` files), so a checkpoint folder shared with a group reads the same for every file in it.

    write_bytes(path, data)                      write_text(path, text)
    write_json(path, obj, indent=2)              write_atomic(path, lambda f: torch.save(obj, f))
    write_atomic_path(path, lambda tmp: save_file(tensors, tmp))   # writers that need a file name

Standard library only; nothing here imports from ``lib``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def temp_path_beside(path: str | os.PathLike) -> Path:
    """A fresh hidden name in ``path``'s folder that keeps its suffix (``.x.tmp-PID-RANDOM.mp4``), so
    writers that choose a format by the extension (PyAV, safetensors) still see it."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(
    path: str | os.PathLike,
    write: Callable[[IO[Any]], object],
    mode: str = "wb",
    encoding: str | None = None,
) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path`` (opened with ``mode``: "wb" or "w"), fsync
    it and rename it to ``path``. The folder is created if needed. Returns ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"write_atomic: mode must be 'wb' or 'w', got {mode!r}")

    def write_file(tmp: Path) -> None:
        with open(tmp, mode.replace("w", "x"), encoding=encoding if mode == "w" else None) as f:
            write(f)

    return write_atomic_path(path, write_file)


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (``/proc/self/status``)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore (not thread-safe, hence the fallback)
    os.umask(mask)
    return mask


def write_atomic_path(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """For writers that take a file name: ``write(tmp)`` creates the temporary file (same folder, same
    suffix), which is then fsynced, given the umask's permissions (``0o666 & ~umask``) and renamed to
    ``path``. The folder is created if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_beside(path)
    try:
        write(tmp)
        if not tmp.is_file():
            raise FileNotFoundError(f"write_atomic_path({path}): the writer did not create {tmp}")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
            os.fchmod(f.fileno(), 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(data))


def write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda f: f.write(text), mode="w", encoding=encoding)


def write_json(path: str | os.PathLike, obj: Any, **dumps_kwargs: Any) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` and a final newline to ``path`` atomically (UTF-8)."""
    return write_text(path, json.dumps(obj, **dumps_kwargs) + "\n")


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move a finished ``tmp_dir`` to ``final_dir``, replacing an existing folder of that name.

    The old folder is first renamed to ``FINAL.old`` and removed once the new one is in place, so at every
    moment one complete folder exists under one of the two names (a killed process leaves ``.old`` behind;
    its caller removes such leftovers on its next start).
    """
    tmp_dir, final_dir = Path(tmp_dir), Path(final_dir)
    old = final_dir.with_name(final_dir.name + ".old")
    if final_dir.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(final_dir.parent)
