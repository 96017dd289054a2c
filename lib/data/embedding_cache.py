"""Retrieval embeddings cached on disk, keyed by the model's weights, the frame store and the clip settings.

A second query run over the same gallery with the same checkpoint encodes no video: its embeddings come from
``{folder}/{key}.safetensors`` (written atomically). The key is a SHA-256 over

* the model: every parameter and buffer (names, shapes, dtypes, bytes), so any change of weights misses;
* the frame store: each TSV file's resolved path, size and modification time and its ``.lineidx`` bytes, so a
  rewritten or re-indexed store misses;
* the clip settings (frames, side, transform) and the ordered video ids.

Files hold tensors only (safetensors; nothing in them can run code) and the ids in their metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lib.utils.atomic import write_atomic_path


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of every named parameter and buffer of ``model`` (computed once per set of weights)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def store_fingerprint(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 of the frame TSVs' identity (path, size, mtime) and their ``.lineidx`` contents."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path).resolve()
        st = path.stat()
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}".encode())
        lineidx = path.with_suffix(".lineidx")
        if lineidx.is_file():
            h.update(lineidx.read_bytes())
    return h.hexdigest()


class EmbeddingCache:
    """``get`` / ``put`` of (ids, embeddings) under a key from :meth:`key`."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    @staticmethod
    def key(model_fp: str, store_fp: str, settings: Mapping[str, Any], ids: Sequence[str]) -> str:
        payload = json.dumps([model_fp, store_fp, dict(settings), list(ids)], sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def get(self, key: str, ids: Sequence[str]) -> torch.Tensor | None:
        """The cached (len(ids), d) embeddings, or None (missing, or written for other ids)."""
        path = self.path(key)
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as f:
            if json.loads((f.metadata() or {}).get("ids", "null")) != list(ids):
                return None
            return f.get_tensor("embeddings")

    def put(self, key: str, ids: Sequence[str], embeddings: torch.Tensor) -> Path:
        """Write atomically (:func:`lib.utils.atomic.write_atomic_path`)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = {"embeddings": embeddings.detach().float().cpu().contiguous()}
        metadata = {"ids": json.dumps(list(ids))}
        return write_atomic_path(self.path(key), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


__all__ = ["EmbeddingCache", "model_fingerprint", "store_fingerprint"]
