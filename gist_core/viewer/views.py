"""What the dashboard pages and the notebook show, as pure functions over a run directory (no Streamlit here).

A facade: the functions live in the modules below, one per dashboard topic; `from gist_core.viewer import views;
views.X` keeps working for every page, test and script. Patch a function in its own module, not here.
Figures (plotly) are in gist_core.viewer.figures.

    labels:     names the pages show; ground truth as groups
    rundir:     run directory basics: stamps, JSON, frames, stored arrays
    rescore:    re-scoring at any rank, budget and rule
    breakdowns: coverage, per-subtask columns, who each rule selects
    brushing:   histogram counts and chart selections
    examples:   the examples table, one example, nearest targets, export
    spectrum:   singular values per checkpoint, the rank advisor
    pool_map:   the 2-D map (PCA, cached UMAP)
    progress:   stages, run status, the runs table
    compare:    gist-lab compare's table and charts' data
    curvature:  gist-lab geometry's report and matrices
"""
from __future__ import annotations

from gist_core.analysis.curvature import correlation_matrix  # the Curvature page's correlation view
from gist_core.data.truth import Truth, has_ground_truth, metrics_from, relevant_mask, truth_masks
from gist_core.viewer.breakdowns import (
    column_distributions,
    column_quantiles,
    compare_columns,
    coverage_display,
    coverage_table,
    gist_columns,
    max_winners,
    selection_winners,
    subtask_breakdown,
    winners_by_rank,
    wrong_in_selection,
)
from gist_core.viewer.brushing import (
    brush_summary,
    histogram_counts,
    in_score_range,
    points_in_polygon,
    rows_from_points,
    rows_in_selection,
    score_range_from_selection,
)
from gist_core.viewer.compare import (
    COMPARE_COLUMNS,
    COST_STAGES,
    METHOD_ORDER,
    RATIO_LABELS,
    compare_path,
    compare_rules,
    compare_stamp,
    compare_table,
    compare_value,
    cost_frame,
    has_compare,
    has_downstream,
    load_compare,
    matrix_frame,
    per_seed_frame,
    per_subtask_frame,
    ratio_metrics,
    row_family,
    rows_with_rules,
    zoom_range,
)
from gist_core.viewer.curvature import (
    GEOMETRY_COLUMNS,
    MATRICES,
    DisplayMatrix,
    curvature_matrices,
    diagonal_frame,
    display_matrix,
    geometry_epochs,
    geometry_job,
    geometry_matrix_path,
    geometry_path,
    geometry_running,
    geometry_stamp,
    geometry_table,
    has_geometry,
    load_geometry,
    log_color,
    spectrum_table,
    warmup_epochs,
)
from gist_core.viewer.examples import (
    EXPORT_FIELDS,
    PREVIEW_CHARS,
    example_detail,
    export_jsonl,
    filter_frame,
    looks_like_markdown,
    model_input,
    nearest_targets,
    options,
    preview,
    run_tokenizer,
)
from gist_core.viewer.labels import (
    METHOD_NAMES,
    RANDOM_BASELINE_HELP,
    RULE_HELP,
    RULE_NAMES,
    SCORE_HELP,
    SCORE_NAMES,
    SCORE_SEMANTICS,
    TRUTH_LABELS,
    UNKNOWN,
    group_column,
    truth_labels,
)
from gist_core.viewer.pool_map import (
    MAP_MAX_POINTS,
    MapData,
    map_coords,
    map_frame,
    map_sample,
    pca_2d,
    umap_cached,
    umap_key,
    umap_path,
)
from gist_core.viewer.progress import (
    current_events,
    run_state,
    runs_table,
    stage_plan,
    stage_progress,
)
from gist_core.viewer.rescore import (
    Rescored,
    budget_count,
    default_settings,
    rescored_frame,
    scores_at,
)
from gist_core.viewer.rundir import (
    OLD_SCORE_NOTE,
    Arrays,
    RunData,
    arrays,
    arrays_at,
    base_frame,
    base_frame_at,
    checkpoint_epochs,
    file_stamp,
    has_scores,
    json_number,
    load_run,
    r_max,
    read_json,
    run_config,
    run_summary,
    stale_problem,
    stamp,
    subspace_path,
    target_frame,
    target_frame_at,
    target_groups,
)
from gist_core.viewer.spectrum import (
    Spectrum,
    advisor_curve,
    main_spectrum,
    rank_ranges,
    spectra,
    spectrum_frame,
)

__all__ = [  # every public name of the modules above, plus the re-exports at the top
    "Arrays", "COMPARE_COLUMNS", "COST_STAGES", "DisplayMatrix", "EXPORT_FIELDS",
    "GEOMETRY_COLUMNS", "MAP_MAX_POINTS", "MATRICES", "METHOD_NAMES", "METHOD_ORDER", "MapData",
    "RANDOM_BASELINE_HELP", "RATIO_LABELS", "RULE_HELP", "RULE_NAMES", "Rescored", "RunData", "SCORE_SEMANTICS",
    "OLD_SCORE_NOTE", "SCORE_HELP", "SCORE_NAMES", "PREVIEW_CHARS", "looks_like_markdown", "preview",
    "Spectrum", "TRUTH_LABELS", "Truth", "UNKNOWN", "advisor_curve", "arrays", "arrays_at", "base_frame",
    "base_frame_at", "brush_summary", "budget_count", "checkpoint_epochs", "column_distributions",
    "column_quantiles", "compare_columns", "compare_path", "compare_rules", "compare_stamp", "compare_table",
    "compare_value", "correlation_matrix", "cost_frame", "coverage_display", "coverage_table", "current_events",
    "curvature_matrices", "default_settings", "diagonal_frame", "display_matrix", "example_detail", "export_jsonl",
    "file_stamp", "filter_frame", "geometry_epochs", "geometry_job", "geometry_matrix_path", "geometry_path",
    "geometry_running", "geometry_stamp", "geometry_table", "gist_columns", "group_column", "has_compare",
    "has_downstream", "has_geometry", "has_ground_truth", "has_scores", "histogram_counts", "in_score_range",
    "json_number", "load_compare", "load_geometry", "load_run", "log_color", "main_spectrum", "map_coords",
    "map_frame", "map_sample", "matrix_frame", "max_winners", "metrics_from", "model_input", "nearest_targets",
    "options", "pca_2d", "per_seed_frame", "per_subtask_frame", "points_in_polygon", "r_max", "rank_ranges",
    "ratio_metrics", "read_json", "relevant_mask", "rescored_frame", "row_family", "rows_from_points",
    "rows_in_selection", "rows_with_rules", "run_config", "run_state", "run_summary", "run_tokenizer", "runs_table",
    "score_range_from_selection", "scores_at", "selection_winners", "spectra", "spectrum_frame", "spectrum_table",
    "stage_plan", "stage_progress", "stale_problem", "stamp", "subspace_path", "subtask_breakdown", "target_frame",
    "target_frame_at", "target_groups", "truth_labels", "truth_masks", "umap_cached", "umap_key", "umap_path",
    "warmup_epochs", "winners_by_rank", "wrong_in_selection", "zoom_range",
]
