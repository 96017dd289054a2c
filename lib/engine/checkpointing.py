"""RNG capture and the training-checkpoint folder layout (atomic files and folders: `lib.utils.atomic`).

A training checkpoint is a folder `path_output/checkpoints/step_XXXXXXXX/` holding
    trainer_state.pt   (rank 0) model + optimizer + scheduler + scaler states, data position, counters, config
    rng_rank{R}.pt     (every rank) python / numpy / torch / cuda RNG states of rank R
    ds/                (DeepSpeed only) DeepSpeed's own checkpoint (module, ZeRO optimizer shards, scheduler)
    ds_sha256.json     (DeepSpeed only) the SHA-256 of every file of ds/, checked before a resume reads ds/
    args.json          the resolved config
Every file is read back with torch.load(weights_only=True) (DeepSpeed's too: `lib.engine.deepspeed_support`).
It is written into `step_XXXXXXXX.tmp/` and renamed when complete, then `checkpoints/latest` (a one-line text
file) is replaced; so a killed run never leaves a half-written checkpoint under a final name. Stale `.tmp`
folders are removed on the next start. The last `keep_last_ckpts` checkpoints are kept.
All ranks must see the same file system (single node, or a shared disk).
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lib.utils.atomic import replace_dir, write_text

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "latest"
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


# ---- RNG states


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy, torch CPU and CUDA generator states (storable with torch.save(weights_only=True))."""
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (np_kind, torch.from_numpy(np_keys.astype(np.int64)), np_pos, np_has_gauss, np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(_to_tuple(state["python"]))
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_kind, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- paths


def require_existing(path: str, key: str = "path_ckpt") -> Path | None:
    """'' → None; an existing file/folder → its Path; anything else is an error naming the key."""
    if not path:
        return None
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"--{key} {path} does not exist; give an existing checkpoint, or '' to start from the backbones"
        )
    return p


def checkpoint_root(path_output: str | Path) -> Path:
    return Path(path_output) / CHECKPOINT_DIR


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    """The folder named in `root/latest`, or the highest complete step folder, or None."""
    root = Path(root)
    pointer = root / LATEST_FILE
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if target.is_dir():
            return target
    found = list_checkpoints(root)
    return found[-1] if found else None


def resolve_resume(resume: bool | str, path_output: str | Path) -> Path | None:
    """cfg.resume → the checkpoint folder to load: False/'' → None; True → latest (None if there is none)."""
    if resume is False or resume == "":
        return None
    if resume is True:
        return latest_checkpoint(checkpoint_root(path_output))
    path = Path(resume)
    if path.is_dir() and not (path / "trainer_state.pt").is_file():
        found = latest_checkpoint(path if path.name == CHECKPOINT_DIR else checkpoint_root(path))
        if found is not None:
            return found
    if not (path / "trainer_state.pt").is_file():
        raise FileNotFoundError(
            f"--resume {resume}: not a checkpoint folder (no trainer_state.pt) and no checkpoints under it; "
            f"use --resume true to continue from the latest checkpoint in path_output"
        )
    return path


# ---- manager


class CheckpointManager:
    """Writes step folders atomically (all ranks take part) and keeps the newest `keep_last`."""

    def __init__(self, path_output: str | Path, keep_last: int, rank: int, barrier: Callable[[], None]):
        self.root = checkpoint_root(path_output)
        self.keep_last = max(1, keep_last)
        self.rank = rank
        self.barrier = barrier

    def remove_stale(self) -> None:
        """Delete `.tmp` / `.old` leftovers of a killed run (rank 0)."""
        if self.rank == 0 and self.root.is_dir():
            for p in self.root.iterdir():
                if p.is_dir() and p.suffix in {".tmp", ".old"}:
                    shutil.rmtree(p, ignore_errors=True)
        self.barrier()

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Create `step_XXXXXXXX.tmp/`, call `write(tmp)` on every rank, then publish it (rank 0)."""
        final = self.root / step_dir_name(step)
        tmp = final.with_name(final.name + ".tmp")
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        self.barrier()
        write(tmp)
        self.barrier()
        if self.rank == 0:
            replace_dir(tmp, final)
            write_text(self.root / LATEST_FILE, final.name + "\n")
            for old in list_checkpoints(self.root)[: -self.keep_last]:
                shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return final


def save_state_dict(model: torch.nn.Module, folder: Path) -> None:
    """Default inference-weights writer: `folder/model.pt` holding the model's state_dict."""
    torch.save(model.state_dict(), folder / "model.pt")


def save_model_dir(
    model: torch.nn.Module,
    final_dir: Path,
    save_fn: Callable[[torch.nn.Module, Path], None],
    extra: Callable[[Path], None],
) -> Path:
    """Write inference weights with `save_fn(model, tmp)` + `extra(tmp)` into a temp folder, then rename."""
    tmp = final_dir.with_name(final_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_fn(model, tmp)
    extra(tmp)
    replace_dir(tmp, final_dir)
    return final_dir
