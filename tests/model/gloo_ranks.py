"""Run a script under ``torch.distributed.run`` with two CPU (gloo) ranks and read what each rank wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lib.engine.distributed import find_free_port

REPO = Path(__file__).resolve().parents[2]


def run_two_ranks(script: str, folder: Path) -> list[dict]:
    """Run ``script`` (source text; argv[1] is ``folder``) on 2 ranks; each writes ``folder/rank{r}.json``."""
    path = folder / "two_ranks.py"
    path.write_text(script)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(find_free_port())]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [*launcher, str(path), str(folder)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [json.loads((folder / f"rank{r}.json").read_text()) for r in (0, 1)]
