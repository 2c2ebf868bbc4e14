"""Every figure the dashboard and the notebook draw: plotly only (no Streamlit, no run-folder paths).

Each builder takes what gist_core.viewer computes (data frames, dataclasses) and returns a
`plotly.graph_objects.Figure`; the pages add the widgets, keys and selection callbacks. Colours come
from one palette (figures.palette): the same ground-truth group, method family or mark has the same
colour in every figure.
"""
from __future__ import annotations

from gist_core.viewer.figures.clusters import (
    agreement_bars,
    cluster_scatter,
    composition_heatmap,
    confusion_heatmap,
    k_curve,
    per_group_bars,
)
from gist_core.viewer.figures.compare import agreement_heatmap, cost_bars, metric_bars, per_subtask_heatmap
from gist_core.viewer.figures.curvature import curvature_heatmap, curvature_trend, diagonals
from gist_core.viewer.figures.layers import cosine_histograms, frequency_heatmap, loss_curves, skill_heatmap
from gist_core.viewer.figures.palette import FAMILY_COLORS, MARKS, SCALES, TRUTH_COLORS, family_color, group_color
from gist_core.viewer.figures.pool_map import TARGET_TRACE, pool_map
from gist_core.viewer.figures.proxy import agreement_bars as proxy_agreement_bars
from gist_core.viewer.figures.proxy import rank_heatmap, rho_sweep, stage2_curve
from gist_core.viewer.figures.scores import (
    column_violins,
    example_cosines,
    score_histogram,
    subtask_cosine_bars,
    winners_by_rank_bars,
)
from gist_core.viewer.figures.spectrum import advisor_chart, explained_variance, intrinsic_dimension, singular_values

__all__ = [
    "FAMILY_COLORS", "MARKS", "SCALES", "TARGET_TRACE", "TRUTH_COLORS", "advisor_chart", "agreement_bars",
    "cluster_scatter", "composition_heatmap", "confusion_heatmap", "k_curve", "per_group_bars", "agreement_heatmap",
    "column_violins", "cost_bars", "curvature_heatmap", "curvature_trend", "diagonals", "example_cosines",
    "explained_variance", "family_color", "group_color", "intrinsic_dimension", "metric_bars", "per_subtask_heatmap",
    "pool_map", "score_histogram", "singular_values", "subtask_cosine_bars", "winners_by_rank_bars",
    "cosine_histograms", "frequency_heatmap", "loss_curves", "skill_heatmap", "proxy_agreement_bars", "rank_heatmap",
    "rho_sweep", "stage2_curve",
]
