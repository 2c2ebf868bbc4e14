"""Map: 2-D view of the projected gradients (PCA instant, UMAP on request), target examples marked, lasso -> table,
whose rows can leave or join the working selection, or be downloaded exactly."""
from __future__ import annotations

import streamlit as st

from gist_core.app import curation_ui, ui
from gist_core.viewer import brushing, pool_map
from gist_core.viewer import curation as curation_view
from gist_core.viewer.figures import pool_map as pool_map_figures

ui.page_setup("Map")
st.title("Map")
run_dir = ui.require_scores(ui.run_picker())
n_pool = pool_map.pool_size(run_dir)
st.caption("Each point is a pool example's gradient projected on the first r task directions and normalised "
           "(cosine geometry); stars are the target examples. Pools up to "
           f"{pool_map.MAP_MAX_POINTS:,} examples are drawn in full, a larger one as a seeded sample unless "
           "\"Draw all\" is ticked.")

c = st.columns([3, 2, 2])
rank = ui.rank_slider(run_dir, key="rank_map", container=c[0])
method = c[1].radio("Projection", ["PCA", "UMAP"], horizontal=True, key="map_method").lower()
kind = ui.score_radio(run_dir, key="score_map", container=c[1])
color_by = c[2].selectbox("Colour by", ["score", "source", "skill", "domain", "truth", "selected"], key="map_color")
max_points = pool_map.MAP_MAX_POINTS
if n_pool > max_points and c[2].checkbox(f"Draw all {n_pool:,} points", key="map_draw_all",
                                         help=f"{max_points:,} (a seeded sample) by default: the browser's memory "
                                              "and drawing time grow with the points"):
    max_points = n_pool
s = {**ui.settings(run_dir), "rank": rank, "kind": kind}
rs = ui.rescored(run_dir, s)
ui.settings_caption(s, rs)

md = ui.map_coords(run_dir, rank, method, max_points)
if md is None:
    n_fit = pool_map.umap_fit_points(run_dir, max_points)
    st.info(f"No UMAP cached for r = {rank} at {n_fit:,} points yet. Fitting it should take "
            f"{pool_map.rough_duration(pool_map.umap_estimate_s(n_fit))} on 2 CPU cores (less when a UMAP was fitted "
            "since the dashboard started); the result is saved to "
            f"`{pool_map.umap_path(run_dir, rank, max_points).name}` in the run folder.")
    if st.button("Compute UMAP", key="map_compute", type="primary"):
        with st.spinner("Fitting UMAP…"):
            md = ui.map_coords(run_dir, rank, "umap", max_points, compute=True)
    else:
        st.stop()

pts = pool_map.map_frame(md, rs.frame, color_by, rs.subtasks)
fig = pool_map_figures.pool_map(pts, md.targets, color_by, method)
event = st.plotly_chart(fig, width="stretch", key="map_chart", on_select="rerun",
                        selection_mode=("lasso", "box", "points"))

selection = event.selection if event is not None else None
rows = brushing.rows_in_selection(pts, selection)
st.subheader("Selected on the map")
curated = curation_ui.working(run_dir)
if curated is not None:
    curation_ui.status(run_dir, curated, key="map_cur")
    curation_ui.shown_selection(run_dir, curated, rs, key="map_cur")
if not rows:
    st.caption("Lasso or box-select points on the map to list them here, then remove them from (or add them to) "
               "the working selection, or download exactly these rows.")
else:
    chosen = curation_view.mark_working(rs.frame.iloc[rows], curated.working if curated is not None else ())
    b = brushing.brush_summary(chosen, rs.subtasks)
    st.markdown(f"{b['n']:,} examples, {b['n_selected']:,} in the selection shown, "
                f"{int(chosen['working'].sum()):,} in the working selection"
                + (f", precision {b['precision']:.3f}" if "precision" in b else ""))
    cols = [c for c in ["rank", "score", "id", "source", "skill", "kind", "selected", "working", "prompt", "response"]
            if c in chosen]
    st.dataframe(chosen.sort_values("score", ascending=False)[cols], hide_index=True, width="stretch", key="map_rows")
    ids = tuple(chosen["id"].astype(str))  # pool order, the order an export writes
    if curated is not None:
        curation_ui.edit_buttons(run_dir, curated, list(ids), f"map {brushing.selection_shape(selection) or 'selection'}",
                                 key="map_edit")
    curation_ui.downloads(run_dir, ids, "exactly these rows", f"{run_dir.name}-map-{len(ids)}-rows", key="map_export")
