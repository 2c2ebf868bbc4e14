"""Read-only views of run directories for the dashboard and the CLI (no math here)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from gist_core.store import read_events


def runs_root() -> Path:
    return Path(os.environ.get("GIST_LAB_RUNS", "runs"))


def run_status(run_dir: Path) -> str:
    if (run_dir / "summary.json").exists():
        return "done"
    events = read_events(run_dir)
    if events and events[-1]["status"] == "error":
        return "failed"
    return "running or stopped" if events else "empty"


def list_runs(root: Path | None = None) -> list[dict]:
    """One row per run directory under `root` (folders holding a config.json), newest first."""
    root = root or runs_root()
    if not root.is_dir():
        return []
    rows = []
    for cfg_path in sorted(root.glob("*/config.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        d = cfg_path.parent
        cfg = json.loads(cfg_path.read_text())
        summary = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
        rows.append({"run": d.name, "status": run_status(d), "model": cfg.get("model"), "pool": cfg.get("train"),
                     "target": cfg.get("target"), "budget": cfg.get("budget"), "rank": summary.get("rank", cfg.get("rank")),
                     "precision": summary.get("precision"), "random_precision": summary.get("random_precision"),
                     "n_selected": summary.get("n_selected"), "path": str(d)})
    return rows
