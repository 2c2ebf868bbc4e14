"""Curate: the run's working selection (the method's selection edited by hand): its rows, its edits, what they
changed, whole groups excluded, undo and reset, and the export."""
from __future__ import annotations

import streamlit as st

from gist_core.app import curation_ui, ui
from gist_core.viewer import curation as curation_view

ui.page_setup("Curate")
st.title("Curate")
run_dir = ui.require_scores(ui.run_picker())
st.caption("The working selection starts as the method's selection and changes by edits: rows removed or added "
           "from the Map, Scores and Examples pages, whole groups excluded here. Edits are kept in the run folder "
           "(curation/edits.json, the same file as `gist-lab curate`), replay in order, and undo one at a time.")
curation_ui.locked_warning(run_dir)
c = curation_ui.working(run_dir)
if c is None:
    st.stop()
curation_ui.status(run_dir, c, key="cur")
rs = ui.rescored(run_dir, ui.settings(run_dir))
curation_ui.shown_selection(run_dir, c, rs, key="cur")

st.subheader("Exclude a whole group")
keys = ui.folder_view(curation_view.group_keys, run_dir)
g = st.columns([1, 3, 2], vertical_alignment="bottom")
key = g[0].selectbox("Group by", keys, key="cur_group_key",
                     help="domain: code / math / writing / other by a keyword rule (a reading aid); cluster: "
                          "`gist-lab cluster`'s GradientSpace clusters")
counts = ui.folder_view(curation_view.group_counts, run_dir, key)
values = counts.set_index("value")
value = g[1].selectbox("Value", counts["value"].tolist(), key="cur_group_value",
                       format_func=lambda v: f"{v} ({values.at[v, 'in_working']:,} working / "
                                             f"{values.at[v, 'pool_rows']:,} pool rows)",
                       help="rows of the value in the working selection / in the pool")
if value is not None:
    n_out = int(values.at[value, "in_working"])
    g[2].button(f"Exclude the group ({n_out:,} rows leave)", key="cur_exclude", icon=":material/block:",
                disabled=n_out == 0, width="stretch",
                help=f"one edit: every pool row with {key} = {value} leaves the working selection (rows added later "
                     "stay)",
                on_click=curation_ui.exclude, args=(run_dir, f"{key}={value}", "cur_exclude"))
curation_ui.said("cur_exclude")

st.subheader("The working selection")
table = ui.folder_view(curation_view.working_table, run_dir)
st.caption(f"{len(table):,} rows in pool order, the order the export writes; score and rank are the run's own "
           "(the ones the export writes).")
st.dataframe(table, hide_index=True, width="stretch", height=360, key="cur_table",
             column_config={"score": st.column_config.NumberColumn(format="%.4f")})

st.subheader("Export")
curation_ui.downloads(run_dir, None, "the working selection", f"{run_dir.name}-working", key="cur_export")
st.caption(f"The same files as `gist-lab export --run {run_dir} --format rows|messages --out FILE` (and FILE"
           ".provenance.json).")

st.subheader("Edits")
edits = curation_view.edits_table(c)
if edits.empty:
    st.caption("No edit yet: the working selection is the method's selection.")
else:
    st.dataframe(edits, hide_index=True, width="stretch", key="cur_edits")
    with st.popover("Reset: drop every edit", icon=":material/restart_alt:"):
        st.markdown(f"Drop all {len(edits)} edits? The working selection goes back to the method's selection; "
                    "Undo cannot bring them back.")
        st.button(f"Drop {len(edits)} edits", key="cur_reset", type="primary",
                  on_click=curation_ui.reset, args=(run_dir, "cur_status"))

st.subheader("Against the method's selection")
diff = ui.folder_view(curation_view.difference, run_dir)
d = st.columns(2)
for col, (name, rows) in zip(d, diff.items()):
    col.markdown(f"**{name.capitalize()}** by the edits: {len(rows):,} row{'' if len(rows) == 1 else 's'}")
    if len(rows):
        col.dataframe(rows, hide_index=True, width="stretch", height=240, key=f"cur_{name}",
                      column_config={"score": st.column_config.NumberColumn(format="%.4f")})
