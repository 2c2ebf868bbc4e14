"""The selection methods by name: what `compare` can run, how its rows are labelled. Light: no torch.

A method is a family of scores over the pool (gist, less, rawcos, embedding, length, random, ...); score-based
families are reported under every selection rule (a compare row is `<family>_<rule>`, scoring.row_name).
The runner maps each name onto the code that computes its scores (runner/compare.py, SCORERS).
"""
from __future__ import annotations

from gist_core.methods.scoring import split_row

DEFAULT_METHODS = ("gist", "less", "rawcos", "random", "length", "embedding", "full")
KNOWN_METHODS = DEFAULT_METHODS + ("oracle", "gist_mean", "gist_max")
# GIST at one fixed aggregation, on the run's stored projections (no extra gradients): the run's own
# aggregation is the "gist" row; these add the other one to the same table
AGGREGATION_METHODS = {"gist_mean": "subtask_mean", "gist_max": "example_max"}
DEFAULT_RULES = ("global", "subtask")
# methods with scores over the pool, in the order compare computes them (GIST first: gist_mean/gist_max reuse
# its projections and cost entries); random, full and oracle are selections without scores
SCORED_METHODS = ("gist", "gist_mean", "gist_max", "less", "rawcos", "embedding", "length")
FAMILY_LABELS = {"gist": "GIST", "gist_mean": "GIST (subtask means)", "gist_max": "GIST (example max)",
                 "less": "LESS", "rawcos": "raw-gradient cosine", "embedding": "embedding similarity"}
RULE_LABELS = {"global": "global top-k", "subtask": "per-subtask quota", "zscore": "z-scored max",
               "quantile": "quantile max", "examples": "round-robin over target examples"}
LABELS = {"random": "random", "length": "longest responses", "full": "full pool", "oracle": "oracle (true target examples)"}


def row_label(row: str) -> str:
    """A compare row's name for people: 'gist_subtask' -> 'GIST, per-subtask quota'."""
    family, rule = split_row(row)
    if family in FAMILY_LABELS:
        return f"{FAMILY_LABELS[family]}, {RULE_LABELS[rule]}"
    return LABELS.get(row, row)
