"""The selection methods by name: what `compare` can run, how its rows are labelled. Light: no torch.

A method is a family of scores over the pool (gist, less, rawcos, embedding, length, random, ...); score-based
families are reported under every selection rule (a compare row is `<family>_<rule>`, scoring.row_name).
The runner maps each name onto the code that computes its scores (runner/compare.py, SCORERS).
"""
from __future__ import annotations

from gist_core.methods.scoring import split_row

DEFAULT_METHODS = ("gist", "less", "rawcos", "random", "length", "embedding", "full")
KNOWN_METHODS = DEFAULT_METHODS + ("oracle", "gist_mean", "gist_max", "gist_paper", "rds", "minilm")
# GIST variants on the run's stored projections (no extra gradients): the run's own settings are the "gist" row;
# these add other aggregations, or the GIST paper's exact rule (example max, in-subspace cosine, tau = 0.95,
# global top-k: reported under the global rule only), to the same table
PAPER_RULE = {"aggregation": "example_max", "balance": "global", "rank_rule": "tau", "tau": 0.95, "score": "subspace"}
GIST_VARIANTS = {"gist_mean": {"aggregation": "subtask_mean"}, "gist_max": {"aggregation": "example_max"},
                 "gist_paper": {**PAPER_RULE, "rank": None}}
DEFAULT_RULES = ("global", "subtask")
# methods with scores over the pool, in the order compare computes them (GIST first: its variants reuse its
# projections and cost entries); random, full and oracle are selections without scores
SCORED_METHODS = ("gist", "gist_mean", "gist_max", "gist_paper", "less", "rawcos", "embedding", "rds", "minilm",
                  "length")
FAMILY_LABELS = {"gist": "GIST", "gist_mean": "GIST (subtask means)", "gist_max": "GIST (example max)",
                 "less": "LESS", "rawcos": "raw-gradient cosine", "embedding": "embedding similarity",
                 "rds": "RDS+ (position-weighted hidden states)", "minilm": "MiniLM sentence embeddings"}
RULE_LABELS = {"global": "global top-k", "subtask": "per-subtask quota", "zscore": "z-scored max",
               "quantile": "quantile max", "examples": "round-robin over target examples"}
LABELS = {"random": "random", "length": "longest responses", "full": "full pool", "oracle": "oracle (true target examples)",
          "gist_paper": "GIST as in the paper (example max, in-subspace cosine, τ = 0.95, global top-k)"}


def row_label(row: str) -> str:
    """A compare row's name for people: 'gist_subtask' -> 'GIST, per-subtask quota'."""
    family, rule = split_row(row)
    if family in FAMILY_LABELS:
        return f"{FAMILY_LABELS[family]}, {RULE_LABELS[rule]}"
    return LABELS.get(row, row)
