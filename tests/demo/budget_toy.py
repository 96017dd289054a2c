"""tests/engine/toy_train.py under the demo's time budget: ``--budget_s S`` (lib.demo.budget.TimeBudget; 0 =
set the plan, never re-fit), ``--last_epoch_steps N`` (the plan's last epoch), toy_train's own arguments."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "engine")]

from toy_train import main  # noqa: E402

from lib.demo.budget import TimeBudget  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    own = {}
    for key in ("--budget_s", "--last_epoch_steps"):
        if key in argv:
            at = argv.index(key)
            own[key] = argv[at + 1]
            argv = argv[:at] + argv[at + 2 :]
    last = int(own["--last_epoch_steps"]) if "--last_epoch_steps" in own else None
    main(argv, callbacks=[TimeBudget(float(own["--budget_s"]), last)])
