"""Where run directories live (no math, no torch): the dashboard and the CLI agree on it."""
from __future__ import annotations

import os
from pathlib import Path


def runs_root() -> Path:
    return Path(os.environ.get("GIST_LAB_RUNS", "runs"))
