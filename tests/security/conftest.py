"""The security tests launch the engine's toy run (tests/engine/engine_runs.py) like the engine tests do."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
