"""The one palette of every figure: colours by meaning (ground truth, method family, selection, marks on an axis)
and the colour scales. Groups without a meaning of their own (sources, skills, stages, checkpoints) take the
theme's colour cycle, so that Streamlit's theme still styles them."""
from __future__ import annotations

from gist_core.viewer.compare import row_family
from gist_core.viewer.labels import TRUTH_LABELS, UNKNOWN

GREEN = "#2e7d32"
LIGHT_GREEN = "#66bb6a"
RED = "#d32f2f"
DARK_RED = "#c62828"
AMBER = "#f9a825"
GREY = "#9e9e9e"
BLUE = "#1565c0"
PURPLE = "#6a1b9a"
ORANGE = "#ef6c00"
BROWN = "#8d6e63"
SLATE = "#455a64"
NEUTRAL = "#757575"
INK = "black"
PAPER = "white"

TRUTH_COLORS = {**dict(zip(TRUTH_LABELS, (GREEN, RED, AMBER, GREY))), UNKNOWN: NEUTRAL}
SELECTED_COLORS = {"selected": GREEN, "not selected": GREY}
DOMAIN_COLORS = {"code": BLUE, "math": ORANGE, "writing": PURPLE, "other": GREY}
FAMILY_COLORS = {"gist": GREEN, "gist_mean": GREEN, "gist_max": LIGHT_GREEN, "gist_paper": LIGHT_GREEN, "less": BLUE,
                 "rawcos": PURPLE, "embedding": ORANGE, "rds": AMBER, "minilm": BROWN, "length": BROWN, "random": GREY,
                 "full": SLATE, "oracle": DARK_RED}
MARKS = {"threshold": RED, "r95": GREEN, "r99": PURPLE, "suggested": GREEN, "curve": BLUE, "target": INK,
         "adam": INK, "random_reference": GREY}
# one diverging scale for every correlation, blue for positive like the sequential "share" scale beside it
SCALES = {"score": "Viridis", "magnitude": "Viridis", "diverging": "RdBu", "share": "Blues", "loss": "Viridis_r",
          "exact_match": "Viridis"}


def family_color(row: str) -> str:
    """The colour of a compare row's method family (gist_quantile -> gist's); NEUTRAL for one without."""
    return FAMILY_COLORS.get(row_family(row), NEUTRAL)


def group_color(by: str, group: str) -> str | None:
    """A group's colour when grouping by ground truth, selection or domain; None (the theme's cycle) otherwise."""
    if by == "truth":
        return TRUTH_COLORS.get(group, NEUTRAL)
    if by == "selected":
        return SELECTED_COLORS.get(group, NEUTRAL)
    if by == "domain":
        return DOMAIN_COLORS.get(group, NEUTRAL)
    return None


def translucent(hex_color: str, alpha: float) -> str:
    """'#rrggbb' as an rgba() string with the given opacity (for bands behind a line)."""
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha:g})"
