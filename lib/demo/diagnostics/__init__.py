"""Probes of the demo recipe, each a command (``python -m lib.demo.diagnostics.NAME --help``):

    attribute_probe  how fast the demo's Video Swin learns one attribute when supervised directly
    feature_probe    which attributes a demo checkpoint's video features still hold (frozen linear probes)
    mc_errors        the one-sequence multiple-choice questions a trained demo model gets wrong
    recipes          variants of the demo's multi-task run side by side

Their findings are in ``lib/demo/TUNING.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def command_line(module: str) -> str:
    """The command line that ran ``module`` (``python -m lib.demo.diagnostics.NAME ...``)."""
    return " ".join([Path(sys.executable).name, "-m", module, *sys.argv[1:]])
