"""Names the pages show, and the ground truth as groups: truth labels, grouping columns, rule and method names."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gist_core.data.truth import has_ground_truth

SCORE_SEMANTICS = ("Score = cosine in [-1, 1] between an example's gradient and a target direction in the rank-r target "
                   "subspace; higher = better aligned with the target. Norm-aware (the default) divides by the gradient's "
                   "whole length, so a gradient mostly outside the subspace scores low; in-subspace (the GIST code) "
                   "normalises after projecting and ignores that part.")
SCORE_NAMES = {"normaware": "norm-aware", "subspace": "in-subspace (GIST code)"}
SCORE_HELP = ("norm-aware: (Vᵣᵀg)·(Vᵣᵀc) / (‖g‖ ‖Vᵣᵀc‖), the target side denoised in the subspace, the pool gradient's "
              "whole length kept; at the full rank it equals raw-gradient cosine. in-subspace: cos(Vᵣᵀg, Vᵣᵀc), the GIST "
              "reference code's score, which ignores how much of g lies outside the subspace.")
TRUTH_LABELS = ("target skill · correct", "target skill · wrong answer", "target skill · look-alike", "other skill")
UNKNOWN = "(unknown)"
METHOD_NAMES = {"less": "LESS", "rawcos": "raw-gradient cosine", "embedding": "embedding similarity"}
RULE_NAMES = {"global": "global (paper)", "subtask": "quota", "zscore": "z-score", "quantile": "quantile",
              "examples": "per example"}
RULE_HELP = ("global: top-k of the max subtask cosine (the GIST paper's and LESS's rule); quota: each subtask column "
             "takes its best example in turn; z-score / quantile: each column standardised over the pool (z-score, or "
             "the share of the pool at or below), then the top-k of their max; per example: each target example "
             "takes its best pool example in turn (RDS+, the TIS study)")
# One definition of the random baseline on every page and in the CLI: the *expected* precision of a
# uniformly random selection of the same size (the pool's share of correct target examples), not one draw.
RANDOM_BASELINE_HELP = ("'vs random': this precision minus the expected precision of a random selection of the same "
                        "size, i.e. the share of correct target-skill examples in the pool (no sampling noise)")


def truth_labels(frame: pd.DataFrame, subtasks: list[str]) -> pd.Series:
    """One of TRUTH_LABELS per row (UNKNOWN where the pool carries no skill)."""
    in_target = frame["skill"].isin(subtasks).to_numpy()
    kind = frame["kind"].to_numpy(dtype=object)
    out = np.where(in_target, TRUTH_LABELS[0], TRUTH_LABELS[3]).astype(object)
    out[in_target & (kind == "wrong")] = TRUTH_LABELS[1]
    out[in_target & (kind == "distractor")] = TRUTH_LABELS[2]
    out[frame["skill"].isna().to_numpy()] = UNKNOWN
    return pd.Series(out, index=frame.index, name="truth")


def group_column(frame: pd.DataFrame, by: str, subtasks: list[str]) -> pd.Series:
    """Each row's group for histograms, maps and tables: its ground truth ('truth'), 'selected' / 'not selected',
    or the value of column `by` (UNKNOWN where missing)."""
    if by == "truth":
        return truth_labels(frame, subtasks) if has_ground_truth(frame) else pd.Series(UNKNOWN, index=frame.index)
    if by == "selected":
        return frame["selected"].map({True: "selected", False: "not selected"})
    return frame[by].astype(object).where(frame[by].notna(), UNKNOWN).astype(str)
