"""The JSON reports a run folder holds, typed and versioned: summary.json (select), compare.json (compare),
geometry/geometry.json (geometry). Each carries `report` (its kind) and `version`; `read_report` refuses a
report of another kind or of a newer version than this code knows, and reads files written before
versions existed as version 0 (their fields are a subset of version 1's)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TypedDict

from gist_core.errors import StoreError

REPORT_VERSIONS = {"summary": 1, "compare": 1, "geometry": 1, "clusters": 1, "experts": 1, "train": 1, "ablation": 1, "proxy": 1}


class SummaryReport(TypedDict, total=False):
    """summary.json: what `select` chose and how good it is where the pool has labels."""
    report: str
    version: int
    n_pool: int
    n_target: int
    n_subtasks: int
    n_selected: int
    rank: int
    rank_rule: str
    r_max: int
    r95: int
    r99: int
    sigma: list[float]
    aggregation: str
    balance: str
    checkpoint: int
    starved_subtasks: list[str]
    by_balance: dict[str, dict[str, Any]]   # per selection rule: coverage, precision, starved subtasks
    precision: float                        # with ground truth only
    random_precision: float
    precision_over_random: float
    advisor_suggested: int | None
    stage_wall_s: dict[str, float]
    wall_s: float
    score_semantics: str


class CompareTable(TypedDict, total=False):
    """compare.json: one entry per method row (`<family>_<rule>`), costs, agreement, downstream."""
    report: str
    version: int
    n_pool: int
    n_selected: int
    methods: dict[str, dict[str, Any]]      # label, precision, wall_s, flops, bytes, test_loss, per_subtask, ...
    overlap: dict[str, dict[str, float]]
    rank_correlation: dict[str, dict[str, float]]
    base: dict[str, Any]
    train_recipe: dict[str, Any]
    compute_ratio_gist_over_less: float
    wall_s: float


class GeometryReport(TypedDict, total=False):
    """geometry/geometry.json: curvature numbers of one LoRA block per warm-up checkpoint."""
    report: str
    version: int
    config: dict[str, Any]
    n_examples: int
    checkpoints: dict[str, dict[str, Any]]
    spectrum: list[dict[str, Any]]


def stamp(kind: str, report: dict) -> dict:
    """`report` with its kind and version in front."""
    return {"report": kind, "version": REPORT_VERSIONS[kind], **report}


def check_report(report: dict, kind: str, where: str = "report") -> dict:
    """`report` itself when it is a `kind` report this code can read; else a one-line StoreError."""
    if not isinstance(report, dict):
        raise StoreError(f"{where}: not a JSON object")
    found, version = report.get("report", kind), report.get("version", 0)
    if found != kind:
        raise StoreError(f"{where}: a '{found}' report where a '{kind}' report belongs")
    if not isinstance(version, int) or version > REPORT_VERSIONS[kind]:
        raise StoreError(f"{where}: {kind} report version {version} is newer than this gist-lab reads "
                         f"({REPORT_VERSIONS[kind]}); upgrade gist-lab")
    return report


def readable_report(report: Any, kind: str) -> dict | None:
    """`report` when it is a `kind` report this code can read, else None (the dashboard shows nothing rather
    than misreading a report of another kind or of a newer version)."""
    try:
        return check_report(report, kind) if report is not None else None
    except StoreError:
        return None


def read_report(path: str | os.PathLike, kind: str) -> dict | None:
    """The `kind` report at `path` (None when the file is absent)."""
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{p}: not valid JSON ({e})") from None
    return check_report(data, kind, str(p))
