"""tests/engine/toy_train.py under the demo's time budget: ``--budget_s S`` (lib.demo.budget.TimeBudget) and
toy_train's own arguments."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "engine")]

from toy_train import main  # noqa: E402

from lib.demo.budget import TimeBudget  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    at = argv.index("--budget_s")
    seconds = float(argv[at + 1])
    main(argv[:at] + argv[at + 2 :], callbacks=[TimeBudget(seconds)])
