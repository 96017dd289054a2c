"""Frame TSV files: random-access reader, crash-safe writer, shards and id → offset maps.

Format (LAVENDER/VIOLET, read as it is): one row per video, columns separated by ``\\t``, rows ended by
``\\n``, ASCII. Two layouts exist: ``id \\t frame…`` (the reference ``extract_tsv.py``, pretraining shards)
and ``id \\t meta \\t frame…`` (downstream ``img_{dataset}.tsv``); a frame column is a base64 JPEG and
therefore starts with ``/9j/`` (see :func:`frame_columns`).

Beside ``X.tsv`` sits ``X.lineidx``: the byte offset of every row start, one decimal number per line.
``X.lineidx.8b`` (the same offsets as 8-byte little-endian integers) is accepted when no ``X.lineidx``
exists. A missing index is built by scanning the TSV and saved atomically; an index that does not match
its TSV raises :class:`TSVError` (delete it to rebuild, or run ``_tools/check_tsv.py``).

``img_{dataset}.id2lineidx.pkl`` maps ``Path(video_id).stem`` to the byte offset of its row
(:func:`load_id2lineidx`, :meth:`TSVFile.row_at_offset`; built by ``lib.data.tsv_check.build_id2lineidx``).
Reading a whole file to report its problems: :mod:`lib.data.tsv_check`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from lib.utils.atomic import write_bytes

LOG = logging.getLogger(__name__)

JPEG_B64_MAGIC = b"/9j/"  # base64 of the JPEG start-of-image marker FF D8 FF
LINEIDX_SUFFIX = ".lineidx"
INPROGRESS_SUFFIX = ".inprogress"
_SCAN_CHUNK = 1 << 24  # bytes read at a time when scanning a TSV for row starts
_N_SAMPLED_OFFSETS = 64  # offsets checked for a preceding newline when an index is loaded
_KEY_PREFIX_BYTES = 256  # bytes read to find column 0 without reading the whole row


class TSVError(ValueError):
    """A TSV, its ``.lineidx`` or an id → offset map is malformed; the message names the file and the fix."""


# -------------------------------------------------------------------------------------------------- paths


def split_tsv_path(prefix_or_tsv: str | os.PathLike) -> tuple[Path, Path]:
    """``X`` or ``X.tsv`` → (``X.tsv``, ``X.lineidx``); dots inside ``X`` are kept."""
    text = os.fspath(prefix_or_tsv)
    stem = text[: -len(".tsv")] if text.endswith(".tsv") else text
    return Path(stem + ".tsv"), Path(stem + LINEIDX_SUFFIX)


def eight_byte_lineidx(lineidx: Path) -> Path:
    """``X.lineidx`` → ``X.lineidx.8b`` (the same offsets as int64 little-endian)."""
    return Path(str(lineidx) + ".8b")


# --------------------------------------------------------------------------------------------- .lineidx


def scan_row_offsets(tsv_path: str | os.PathLike) -> np.ndarray:
    """Byte offsets of every row start in ``tsv_path``, found by scanning for ``\\n``."""
    parts = []
    pos = 0
    with open(tsv_path, "rb") as f:
        while chunk := f.read(_SCAN_CHUNK):
            newlines = np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10)
            parts.append(newlines.astype(np.int64) + (pos + 1))
            pos += len(chunk)
    if pos == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.concatenate([np.zeros(1, dtype=np.int64), *parts])
    return starts[starts < pos]  # a newline at the very end starts no row


def read_lineidx(path: str | os.PathLike) -> np.ndarray:
    """Offsets from a ``.lineidx`` (decimal text) or ``.lineidx.8b`` (int64 little-endian) file."""
    path = Path(path)
    data = path.read_bytes()
    if path.name.endswith(".8b"):
        if len(data) % 8:
            raise TSVError(f"{path}: size {len(data)} is not a multiple of 8; delete it to rebuild the index")
        return np.frombuffer(data, dtype="<i8").astype(np.int64)
    try:
        return np.array(data.split(), dtype=np.int64)
    except ValueError:
        n, line = next(
            ((n, line) for n, line in enumerate(data.splitlines(), 1) if not line.strip().isdigit()), (0, b"")
        )
        raise TSVError(
            f"{path}: line {n} is not a byte offset ({line[:40]!r}); delete it to rebuild the index"
        ) from None


def format_lineidx(offsets: Iterable[int]) -> bytes:
    """Text of a ``.lineidx`` file: one decimal offset per line."""
    return b"".join(b"%d\n" % int(o) for o in offsets)


def build_lineidx(tsv_path: str | os.PathLike, lineidx_path: str | os.PathLike | None = None) -> np.ndarray:
    """Scan ``tsv_path``, save its ``.lineidx`` atomically (when the folder is writable) and return it."""
    tsv_path = Path(tsv_path)
    lineidx_path = Path(lineidx_path) if lineidx_path else split_tsv_path(tsv_path)[1]
    offsets = scan_row_offsets(tsv_path)
    try:
        write_bytes(lineidx_path, format_lineidx(offsets))
        LOG.info("built %s (%d rows)", lineidx_path, len(offsets))
    except OSError as e:
        LOG.warning("could not save %s (%s); keeping the index in memory", lineidx_path, e)
    return offsets


def _first_newline(fd: int, start: int, end: int) -> int:
    """Position of the first ``\\n`` in bytes [start, end) of ``fd``, or -1."""
    pos = start
    while pos < end:
        chunk = os.pread(fd, min(1 << 20, end - pos), pos)
        if not chunk:
            break
        hit = chunk.find(b"\n")
        if hit >= 0:
            return pos + hit
        pos += len(chunk)
    return -1


def lineidx_problem(offsets: np.ndarray, fd: int, size: int) -> str | None:
    """Cheap consistency check of ``offsets`` against an open TSV of ``size`` bytes; None when it fits.

    Checks: offsets start at 0 and increase, none lies past the end, the last row ends exactly at EOF
    (so no row is missing at the end), and sampled offsets are preceded by a newline (row starts).
    """
    n = len(offsets)
    if n == 0:
        return None if size == 0 else f"it lists no rows but the TSV has {size} bytes"
    if offsets[0] != 0:
        return f"the first row starts at {int(offsets[0])}, not 0"
    if n > 1 and not bool(np.all(offsets[1:] > offsets[:-1])):
        bad = int(np.flatnonzero(offsets[1:] <= offsets[:-1])[0]) + 1
        return f"offsets do not increase at row {bad}"
    if offsets[-1] >= size:
        return f"row {n - 1} starts at {int(offsets[-1])}, past the end of the TSV ({size} bytes)"
    newline = _first_newline(fd, int(offsets[-1]), size)
    if newline not in (-1, size - 1):
        return f"the TSV continues after the last indexed row {n - 1} (more rows than the {n} indexed)"
    sampled = np.unique(np.linspace(1, n - 1, min(n - 1, _N_SAMPLED_OFFSETS)).astype(np.int64))
    for i in sampled:
        if os.pread(fd, 1, int(offsets[i]) - 1) != b"\n":
            return f"row {int(i)} offset {int(offsets[i])} is not at the start of a row"
    return None


# ------------------------------------------------------------------------------------------------ reader


def decode_key(raw: bytes, where: str) -> str:
    """Column 0 (the id) of a row as text; :class:`TSVError` naming ``where`` when it is not UTF-8."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TSVError(f"{where}: column 0 (the id) is not UTF-8: {raw[:60]!r}") from None


def first_rows(keys: Iterable[str]) -> dict[str, int]:
    """Key → row number of its first occurrence."""
    table: dict[str, int] = {}
    for i, k in enumerate(keys):
        table.setdefault(k, i)
    return table


class TSVFile:
    """Random access to the rows of one TSV through its byte-offset index.

    Nothing is opened until the first access. The file is read in binary mode with ``os.pread`` on a
    descriptor owned by the current process: after a fork (DataLoader workers) the first access re-opens
    it, and pickling drops it, so one object can be shared by every worker. Offsets are a numpy int64
    array (shared copy-on-write after a fork, unlike a Python list whose refcounts get touched).
    """

    def __init__(self, path: str | os.PathLike, lineidx: str | os.PathLike | None = None):
        self._fd: int | None = None
        self._pid: int | None = None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"TSV file not found: {self.path}")
        self._lineidx_arg = Path(lineidx) if lineidx is not None else None
        self.lineidx_path: Path | None = None  # the index in use, once loaded
        self._offsets: np.ndarray | None = None
        self._size = 0
        self._key_to_row: dict[str, int] | None = None

    # -- handle and index

    def _descriptor(self) -> int:
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._pid = os.getpid()
        return self._fd

    def _find_lineidx(self) -> Path | None:
        if self._lineidx_arg is not None:
            if not self._lineidx_arg.is_file():
                raise FileNotFoundError(f"lineidx file not found: {self._lineidx_arg}")
            return self._lineidx_arg
        lineidx = split_tsv_path(self.path)[1]
        for candidate in (lineidx, eight_byte_lineidx(lineidx)):
            if candidate.is_file():
                return candidate
        return None

    @property
    def offsets(self) -> np.ndarray:
        """Byte offset of every row start (int64), loaded (or built) and checked on first use."""
        if self._offsets is None:
            fd = self._descriptor()
            size = os.fstat(fd).st_size
            found = self._find_lineidx()
            if found is None:
                found = split_tsv_path(self.path)[1]
                offsets = build_lineidx(self.path, found)
            else:
                offsets = read_lineidx(found)
                problem = lineidx_problem(offsets, fd, size)
                if problem:
                    raise TSVError(
                        f"{found} does not match {self.path}: {problem}. The index is stale or corrupt: "
                        f"delete {found} so that it is rebuilt, or run "
                        f"`python _tools/check_tsv.py {self.path}` to inspect the TSV."
                    )
            self.lineidx_path, self._size, self._offsets = found, size, offsets
        return self._offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: row {i} out of range ({n} rows)")
        return i % n

    def _row_span(self, i: int) -> tuple[int, int]:
        offsets = self.offsets
        start = int(offsets[i])
        end = int(offsets[i + 1]) if i + 1 < len(offsets) else self._size
        return start, end

    # -- rows and keys

    def row_bytes(self, i: int) -> bytes:
        """Row ``i`` as raw bytes without its line ending."""
        i = self._check_index(i)
        start, end = self._row_span(i)
        data = os.pread(self._descriptor(), end - start, start)
        if len(data) != end - start:
            raise TSVError(f"{self.path}: row {i} is cut short (the file shrank since it was indexed)")
        if data.endswith(b"\n"):
            data = data[:-1]
        elif i + 1 < len(self):
            raise TSVError(f"{self.path}: row {i} does not end where row {i + 1} starts; {self._fix()}")
        if b"\n" in data:
            raise TSVError(f"{self.path}: row {i} spans several lines; {self._fix()}")
        return data[:-1] if data.endswith(b"\r") else data

    def row(self, i: int) -> list[bytes]:
        """All columns of row ``i`` (negative ``i`` counts from the end)."""
        return self.row_bytes(i).split(b"\t")

    def key(self, i: int) -> str:
        """Column 0 of row ``i``, read without reading the whole row."""
        i = self._check_index(i)
        start, end = self._row_span(i)
        head = os.pread(self._descriptor(), min(_KEY_PREFIX_BYTES, end - start), start)
        cut = min((p for p in (head.find(b"\t"), head.find(b"\n"), head.find(b"\r")) if p >= 0), default=-1)
        raw = head[:cut] if cut >= 0 else self.row(i)[0]
        return decode_key(raw, f"{self.path} row {i}")

    def keys(self) -> list[str]:
        """Column 0 of every row, in file order."""
        return [self.key(i) for i in range(len(self))]

    def index_of(self, key: str) -> int:
        """Row number of ``key`` (its first occurrence); KeyError naming the file if absent."""
        if self._key_to_row is None:
            self._key_to_row = first_rows(self.keys())
        try:
            return self._key_to_row[key]
        except KeyError:
            raise KeyError(f"id {key!r} not found in {self.path} ({len(self)} rows)") from None

    def index_of_offset(self, offset: int) -> int:
        """Row number of the row starting at byte ``offset`` (TSVError if no row starts there)."""
        i = int(np.searchsorted(self.offsets, offset))
        if i >= len(self) or int(self.offsets[i]) != offset:
            raise TSVError(
                f"{self.path}: no row starts at byte {offset}; the id2lineidx map does not belong to this "
                f"TSV (rebuild it with _tools/make_id2lineidx_pkl.py)"
            )
        return i

    def row_at_offset(self, offset: int) -> list[bytes]:
        """The row starting at byte ``offset`` (as stored in ``img_*.id2lineidx.pkl``)."""
        return self.row(self.index_of_offset(offset))

    def _fix(self) -> str:
        return (
            f"the index {self.lineidx_path} is stale: delete it to rebuild, or run "
            f"`python _tools/check_tsv.py {self.path}`"
        )

    # -- lifetime

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = self._pid = None

    def __enter__(self) -> TSVFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_fd"] = state["_pid"] = None
        return state

    def __repr__(self) -> str:
        rows = len(self._offsets) if self._offsets is not None else "?"
        return f"TSVFile({str(self.path)!r}, rows={rows})"


def frame_columns(row: Sequence[bytes], frame_col: int | None = None) -> list[bytes]:
    """The base64 JPEG columns of ``row``.

    With ``frame_col`` the frames are ``row[frame_col:]``. Otherwise the layout is detected: frames start
    at column 1 (``id \\t frame…``) or column 2 (``id \\t meta \\t frame…``), whichever starts with ``/9j/``.
    """
    if frame_col is not None:
        if not 1 <= frame_col <= len(row):
            raise TSVError(f"frame_col={frame_col} is outside a row of {len(row)} columns")
        return list(row[frame_col:])
    for start in (1, 2):
        if len(row) > start and _is_jpeg_b64(row[start]):
            return list(row[start:])
    key = row[0][:80] if row else b""
    heads = [c[:8] for c in row[1:3]]
    raise TSVError(
        f"row {key!r}: no base64 JPEG (starting with '/9j/') in column 1 or 2 (they start with {heads}); "
        f"pass frame_col= if the frames are stored elsewhere"
    )


def _is_jpeg_b64(column: bytes | str) -> bool:
    head = column[:4]
    return (head.encode("ascii", "replace") if isinstance(head, str) else bytes(head)) == JPEG_B64_MAGIC


# ------------------------------------------------------------------------------------------------ writer


class TSVWriter:
    """Stream rows into ``X.tsv`` + ``X.lineidx``; the final names appear only when :meth:`close` succeeds.

    While writing, rows go to ``X.tsv.inprogress`` and offsets to ``X.lineidx.inprogress``; ``close()``
    flushes, fsyncs and renames both (TSV first). Rows keep the order in which they are written. Leaving
    the ``with`` block through an exception keeps the in-progress files, so a later
    ``TSVWriter(X, resume=True)`` continues them: the TSV is cut back to its last complete row (a row torn
    by a kill is dropped), the index is rebuilt from the TSV, and :meth:`keys_written` tells the caller
    which ids are already done. ``resume=True`` on a finished ``X.tsv`` moves it back to the in-progress
    name and appends to it. Without ``resume`` an old in-progress file is discarded. One writer per prefix.
    """

    def __init__(self, prefix_or_tsv_path: str | os.PathLike, resume: bool = False):
        self.tsv_path, self.lineidx_path = split_tsv_path(prefix_or_tsv_path)
        self.tsv_inprogress = Path(str(self.tsv_path) + INPROGRESS_SUFFIX)
        self.lineidx_inprogress = Path(str(self.lineidx_path) + INPROGRESS_SUFFIX)
        self.tsv_path.parent.mkdir(parents=True, exist_ok=True)
        self._keys: set[str] = set()
        self._rows = 0
        self._offset = 0
        if resume and not self.tsv_inprogress.exists() and self.tsv_path.exists():
            os.replace(self.tsv_path, self.tsv_inprogress)
        if resume and self.tsv_inprogress.exists():
            self._recover()
        elif self.tsv_inprogress.exists():
            LOG.warning("discarding %s (pass resume=True to continue it)", self.tsv_inprogress)
        mode = "ab" if self._rows else "wb"
        self._tsv = open(self.tsv_inprogress, mode)  # noqa: SIM115 (closed in close/abandon)
        self._lineidx = open(self.lineidx_inprogress, mode)  # noqa: SIM115
        self._closed = False

    def _recover(self) -> None:
        """Cut the in-progress TSV back to its last complete row; rebuild the index and the key set."""
        with open(self.tsv_inprogress, "r+b") as f:
            size = os.fstat(f.fileno()).st_size
            keep = _end_of_last_complete_row(f.fileno(), size)
            if keep < size:
                LOG.warning("%s: dropping %d bytes of a torn last row", self.tsv_inprogress, size - keep)
                f.truncate(keep)
        offsets = scan_row_offsets(self.tsv_inprogress)
        write_bytes(self.lineidx_inprogress, format_lineidx(offsets))
        if len(offsets):
            reader = TSVFile(self.tsv_inprogress, lineidx=self.lineidx_inprogress)
            self._keys = set(reader.keys())
            reader.close()
        self._rows, self._offset = len(offsets), keep

    def write(self, columns: Sequence[str | bytes]) -> None:
        """Append one row; column 0 is the id. Tabs/newlines inside a column or a repeated id: ValueError."""
        if self._closed:
            raise ValueError(f"{self.tsv_path}: writer is closed")
        if not columns:
            raise ValueError(f"{self.tsv_path}: row {self._rows} has no columns")
        cols = [c.encode("utf-8") if isinstance(c, str) else bytes(c) for c in columns]
        key = cols[0].decode("utf-8", "replace")
        for j, col in enumerate(cols):
            if b"\t" in col or b"\n" in col or b"\r" in col:
                raise ValueError(
                    f"{self.tsv_path}: row {self._rows} (id {key!r}) column {j} contains a tab or newline; "
                    f"columns must not contain them"
                )
        if not key:
            raise ValueError(f"{self.tsv_path}: row {self._rows} has an empty id (column 0)")
        if key in self._keys:
            raise ValueError(f"{self.tsv_path}: id {key!r} was already written")
        line = b"\t".join(cols) + b"\n"
        self._lineidx.write(b"%d\n" % self._offset)
        self._tsv.write(line)
        self._offset += len(line)
        self._rows += 1
        self._keys.add(key)

    def keys_written(self) -> set[str]:
        """Ids of the rows written so far (including rows kept from a resumed in-progress file)."""
        return set(self._keys)

    def __len__(self) -> int:
        return self._rows

    def flush(self) -> None:
        self._tsv.flush()
        self._lineidx.flush()

    def close(self) -> None:
        """Flush, fsync and publish ``X.tsv`` + ``X.lineidx`` (replacing older ones) atomically."""
        if self._closed:
            return
        for f in (self._tsv, self._lineidx):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self._closed = True
        os.replace(self.tsv_inprogress, self.tsv_path)
        os.replace(self.lineidx_inprogress, self.lineidx_path)
        eight_byte_lineidx(self.lineidx_path).unlink(missing_ok=True)  # it would describe an older TSV

    def abandon(self) -> None:
        """Close without publishing; the in-progress files stay for ``resume=True``."""
        if not self._closed:
            self._tsv.close()
            self._lineidx.close()
            self._closed = True

    def __enter__(self) -> TSVWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abandon()


def _end_of_last_complete_row(fd: int, size: int) -> int:
    """Number of leading bytes of ``fd`` that form complete (newline-terminated) rows."""
    end = size
    while end > 0:
        start = max(0, end - (1 << 20))
        hit = os.pread(fd, end - start, start).rfind(b"\n")
        if hit >= 0:
            return start + hit + 1
        end = start
    return 0


# ------------------------------------------------------------------------------------------------ shards


class MultiTSV:
    """Several TSV files seen as one: rows of file 0, then file 1, … (e.g. ``{dataset}_train_{k}`` shards)."""

    def __init__(self, paths: Sequence[str | os.PathLike | TSVFile]):
        if not paths:
            raise ValueError("MultiTSV needs at least one TSV file")
        self.files = [p if isinstance(p, TSVFile) else TSVFile(p) for p in paths]
        self._ends: np.ndarray | None = None
        self._key_to_row: dict[str, int] | None = None

    @property
    def ends(self) -> np.ndarray:
        """Cumulative row counts: file ``k`` holds global rows ``[ends[k-1], ends[k])``."""
        if self._ends is None:
            self._ends = np.cumsum([len(f) for f in self.files], dtype=np.int64)
        return self._ends

    def __len__(self) -> int:
        return int(self.ends[-1])

    def locate(self, i: int) -> tuple[int, int]:
        """Global row ``i`` → (file number, row within that file)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"row {i} out of range ({n} rows in {len(self.files)} TSV files)")
        i %= n
        k = int(np.searchsorted(self.ends, i, side="right"))
        return k, i - (int(self.ends[k - 1]) if k else 0)

    def row(self, i: int) -> list[bytes]:
        k, j = self.locate(i)
        return self.files[k].row(j)

    def key(self, i: int) -> str:
        k, j = self.locate(i)
        return self.files[k].key(j)

    def keys(self) -> list[str]:
        keys: list[str] = []
        for f in self.files:
            keys.extend(f.keys())
        return keys

    def index_of(self, key: str) -> int:
        if self._key_to_row is None:
            self._key_to_row = first_rows(self.keys())
        try:
            return self._key_to_row[key]
        except KeyError:
            names = ", ".join(f.path.name for f in self.files[:3]) + (", …" if len(self.files) > 3 else "")
            raise KeyError(f"id {key!r} not found in {len(self.files)} TSV files ({names})") from None

    def close(self) -> None:
        for f in self.files:
            f.close()


def shard_paths(directory: str | os.PathLike, stem: str) -> list[Path]:
    """``{directory}/{stem}_{k}.tsv`` for k = 0, 1, … in numeric order; TSVError on none or a gap."""
    pattern = re.compile(re.escape(stem) + r"_(\d+)\.tsv")
    found = {
        int(m.group(1)): p for p in Path(directory).glob(f"{stem}_*.tsv") if (m := pattern.fullmatch(p.name))
    }
    if not found:
        raise TSVError(f"no shards {stem}_0.tsv, {stem}_1.tsv, … in {directory}")
    missing = sorted(set(range(max(found) + 1)) - set(found))
    if missing:
        raise TSVError(f"{directory}: shards of {stem} are missing numbers {missing[:10]}")
    return [found[k] for k in sorted(found)]


# -------------------------------------------------------------------------------- pickles (id2lineidx)


class _PlainUnpickler(pickle.Unpickler):
    """Accepts only plain containers, numbers and strings (no classes: nothing runs while loading)."""

    def find_class(self, module: str, name: str) -> object:
        raise TSVError(f"{self.path}: unexpected object {module}.{name}; expected plain dicts/lists/str")

    def __init__(self, f, path: Path):
        super().__init__(f)
        self.path = path


def _load_plain_pickle(path: str | os.PathLike) -> object:
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return _PlainUnpickler(f, path).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise TSVError(f"{path}: not a readable pickle ({e})") from None


def load_id2lineidx(path: str | os.PathLike) -> dict[str, int]:
    """Read ``img_{dataset}.id2lineidx.pkl``: ``{video_id_stem: byte offset of its row}``."""
    data = _load_plain_pickle(path)
    if not isinstance(data, dict):
        raise TSVError(f"{path}: expected a dict {{id: byte offset}}, found {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise TSVError(f"{path}: entry {key!r}: {value!r} is not an id → byte offset pair")
    return dict(data)


def save_id2lineidx(mapping: dict[str, int], path: str | os.PathLike) -> None:
    """Write an id → offset map as a plain pickle, atomically."""
    write_bytes(path, pickle.dumps({str(k): int(v) for k, v in mapping.items()}, protocol=4))


def id2lineidx_path(tsv_path: str | os.PathLike) -> Path:
    """``X.tsv`` → ``X.id2lineidx.pkl`` (so ``img_msrvtt.tsv`` → ``img_msrvtt.id2lineidx.pkl``)."""
    return Path(str(split_tsv_path(tsv_path)[0])[: -len(".tsv")] + ".id2lineidx.pkl")


def save_frame_pickle(tsv_path: str | os.PathLike, path: str | os.PathLike) -> int:
    """Write the rows of a frame TSV as the reference extractor's ``NAME.pkl`` (``{video_id: [base64 JPEG
    str, ...]}``, in row order), atomically; returns the number of videos."""
    with TSVFile(tsv_path) as tsv:
        videos = {}
        for i in range(len(tsv)):
            row = tsv.row(i)
            frames = [column.decode("ascii") for column in frame_columns(row)]
            videos[decode_key(row[0], f"{tsv.path} row {i}")] = frames
    write_bytes(path, pickle.dumps(videos, protocol=4))
    return len(videos)


def load_frame_pickle(path: str | os.PathLike) -> dict[str, list[bytes]]:
    """The reference extractor's ``NAME.pkl``: ``{video_id: [base64 JPEG (str or bytes), …]}``."""
    data = _load_plain_pickle(path)
    if not isinstance(data, dict):
        raise TSVError(f"{path}: expected a dict {{video_id: [base64 frames]}}, found {type(data).__name__}")
    frames: dict[str, list[bytes]] = {}
    for key, value in data.items():
        if not isinstance(value, list | tuple) or not all(isinstance(v, str | bytes) for v in value):
            raise TSVError(f"{path}: entry {key!r} is not a list of base64 strings")
        if not value:
            raise TSVError(f"{path}: entry {key!r} has no frames")
        frames[str(key)] = [v.encode("ascii") if isinstance(v, str) else v for v in value]
    return frames
