"""Ground-truth metrics of a selection, for pools that carry labels (skill, kind).

Precision counts an example only when it has a target skill AND a correct answer (a missing
kind counts as correct); wrong answers and look-alike distractors are counted separately.
Shared by the pipeline's summary and the dashboard, on a frame with 'skill' and 'kind' columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


def has_ground_truth(frame: pd.DataFrame) -> bool:
    return "skill" in frame and frame["skill"].notna().any()


def relevant_mask(frame: pd.DataFrame, subtasks: list[str]) -> np.ndarray:
    """Target skill AND a correct answer (kind missing counts as correct), as pipeline reports precision."""
    kind = frame["kind"]
    return (frame["skill"].isin(subtasks) & (kind.isna() | (kind == "correct"))).to_numpy()


@dataclass
class Truth:
    """Ground-truth masks of a frame for a set of target subtasks (computed once per run)."""
    relevant: np.ndarray
    wrong: np.ndarray
    distractor: np.ndarray
    of_skill: dict[str, np.ndarray]   # subtask -> relevant & skill == subtask


def truth_masks(frame: pd.DataFrame, subtasks: list[str]) -> Truth | None:
    if not has_ground_truth(frame):
        return None
    skill = frame["skill"].to_numpy(dtype=object)
    kind = frame["kind"].to_numpy(dtype=object)
    in_target = np.isin(skill, subtasks)
    rel = relevant_mask(frame, subtasks)
    return Truth(relevant=rel, wrong=in_target & (kind == "wrong"), distractor=in_target & (kind == "distractor"),
                 of_skill={s: rel & (skill == s) for s in subtasks})


def metrics_from(truth: Truth | None, selected: np.ndarray) -> dict | None:
    """Precision (target skill and correct), recall, coverage, wrong/look-alike counts of a selection mask."""
    if truth is None:
        return None
    rel, n_sel = truth.relevant, int(selected.sum())
    return {"precision": float((rel & selected).sum() / n_sel) if n_sel else 0.0,
            "recall": float((rel & selected).sum() / max(1, rel.sum())), "base_rate": float(rel.mean()),
            "coverage": {s: {"selected": int((m & selected).sum()), "in_pool": int(m.sum())}
                         for s, m in truth.of_skill.items()},
            "n_wrong_selected": int((truth.wrong & selected).sum()),
            "n_distractor_selected": int((truth.distractor & selected).sum())}
