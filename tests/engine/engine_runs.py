"""Engine test helpers: launch tests/engine/toy_train.py (1 process or torchrun) and read its logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.engine.distributed import find_free_port

REPO = Path(__file__).resolve().parents[2]
TOY = Path(__file__).with_name("toy_train.py")

# Small multi-stream run: reg (64 items) + cls (32 items), 2 epochs of 6 optimizer steps with grad_accum 2.
# fp32: runs compared number for number (1 vs 2 processes, resumed vs not) must not depend on the CPU; under
# precision auto a CPU with native bf16 autocasts, and 1 vs 2 ranks then differ by ~1e-3
BASE_ARGS = [
    "--size_epoch", "2", "--logging_steps", "1", "--save_every_steps", "3", "--grad_accum", "2",
    "--lr", "1e-2", "--find_unused_parameters", "true", "--n_workers", "0", "--precision", "fp32",
]  # fmt: skip
_LAUNCH_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass
class ToyRun:
    """A finished toy_train.py launch: exit code, output and its path_output folder."""

    returncode: int
    stdout: str
    stderr: str
    out: Path

    def records(self, kind: str | None = None) -> list[dict]:
        lines = (self.out / "log.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if kind is None or r["kind"] == kind]

    def losses(self) -> dict[int, float]:
        return {r["step"]: r["loss"] for r in self.records("train")}

    def check(self) -> ToyRun:
        assert self.returncode == 0, (
            f"toy run failed ({self.returncode}):\n{self.stdout[-3000:]}\n{self.stderr[-5000:]}"
        )
        return self


def run_toy(
    out: Path,
    *args: str,
    nproc: int = 1,
    launcher: str = "torch.distributed.run",
    timeout: int = 240,
    script: Path = TOY,
) -> ToyRun:
    """Run toy_train.py (or a `script` around it) with `--path_output out` and `args`; with `launcher` on a
    free port when nproc > 1."""
    if nproc == 1:
        cmd = [sys.executable, str(script)]
    else:
        cmd = [sys.executable, "-m", launcher, "--nproc_per_node", str(nproc),
               "--master_port", str(find_free_port()), str(script)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_ENV}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [*cmd, "--path_output", str(out), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    return ToyRun(proc.returncode, proc.stdout, proc.stderr, out)
