"""Side by side: two selections (any two runs, ranks, rules or methods) on one page: overlap, what enters and leaves
with the rank, per domain / subtask, the rows only one of them has, on run A's map in two colours."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from gist_core.app import ui
from gist_core.errors import GistError
from gist_core.methods import scoring
from gist_core.viewer import labels, pool_map, rundir, selections
from gist_core.viewer.figures import selections as selection_figures

ui.page_setup("Side by side")
st.title("Side by side")
home = ui.require_scores(ui.run_picker())
st.caption("Two selections as sets of pool example ids (matched by `id`, so two runs over one pool line up): "
           "GIST re-scored at any rank, rule and budget, a `gist-lab compare` method, a run's stored selection or its "
           "curated working selection. A starts as the run's own settings, B at twice its rank.")
RUNS = [n for n in ui.run_names() if rundir.has_scores(ui.run_dir_of(n))] or [home.name]


def default(side: str, run_dir: Path) -> dict:
    """The run's own settings for A; B the same at twice the rank (half when that is past r_max)."""
    s, rmax = ui.settings(run_dir), rundir.r_max(run_dir)
    rank = s["rank"] if side == "A" else (2 * s["rank"] if 2 * s["rank"] <= rmax else max(1, s["rank"] // 2))
    return {"source": "gist", "rank": rank, "rule": s["balance"], "budget": round(s["budget"] * 100, 1),
            "kind": s["kind"]}


def picker(side: str, box) -> selections.Spec:
    """One column of widgets: run, source and that source's settings; their state is kept per side."""
    def key(name: str) -> str:
        return f"sbs_{side}_{name}"

    st.session_state.setdefault(key("run"), home.name if home.name in RUNS else RUNS[0])
    if st.session_state[key("run")] not in RUNS:
        st.session_state[key("run")] = RUNS[0]
    run_dir = ui.run_dir_of(box.selectbox("Run", RUNS, key=key("run")))
    d = default(side, run_dir)
    for name, value in d.items():
        st.session_state.setdefault(key(name), value)
    offered = selections.sources(run_dir)
    if st.session_state[key("source")] not in offered:
        st.session_state[key("source")] = "gist"
    source = box.radio("Source", offered, key=key("source"), format_func=selections.SOURCES.get, horizontal=True)
    if source in ("stored", "working"):
        box.caption("the run's own rows as written" if source == "stored" else
                    "the stored selection with the run's hand edits (Curate) replayed")
        return selections.Spec(run_dir, source)
    rule_options, method = list(scoring.BALANCES), "gist"
    if source == "gist":
        rmax = rundir.r_max(run_dir)
        st.session_state[key("rank")] = min(max(1, st.session_state[key("rank")]), rmax)
        rank = box.slider("Rank r", 1, rmax, key=key("rank")) if rmax > 1 else 1
        kinds = list(rundir.arrays(run_dir).kinds)
        if st.session_state[key("kind")] not in kinds:
            st.session_state[key("kind")] = kinds[0]
        kind = box.radio("Score", kinds, key=key("kind"), horizontal=True, format_func=labels.SCORE_NAMES.get)
    else:
        methods = selections.compare_methods(run_dir)
        method = box.selectbox("Method", list(methods), key=key("method"))
        rule_options = list(selections.COMPARE_RULES) if methods[method] else ["global"]
        rank, kind = 1, None
    if st.session_state[key("rule")] not in rule_options:
        st.session_state[key("rule")] = rule_options[0]
    rule = box.selectbox("Selection rule", rule_options, key=key("rule"), format_func=labels.RULE_NAMES.get,
                         help=labels.RULE_HELP)
    budget = box.slider("Budget (% of the pool)", 0.1, 50.0, step=0.1, key=key("budget"), format="%.1f%%")
    return selections.Spec(run_dir, source, rank, rule, budget / 100, kind, method)


def load(spec: selections.Spec) -> selections.Selection:
    try:
        return ui.folder_view(selections.resolve, spec.run, *spec.args(), files=selections.watched_files(spec.run))
    except GistError as e:
        st.error(f"{spec.describe()}: {e}", icon=":material/error:")
        st.stop()


cols = st.columns(2, border=True)
cols[0].markdown("#### :blue[A]")
cols[1].markdown("#### :orange[B]")
spec_a, spec_b = picker("A", cols[0]), picker("B", cols[1])
a, b = load(spec_a), load(spec_b)
cols[0].caption(f"{spec_a.describe()} · {a.k:,} rows")
cols[1].caption(f"{spec_b.describe()} · {b.k:,} rows")

# ----------------------------------------------------------------------------- overlap
ov = selections.overlap(a, b)
outside = ov["B not in A's pool"]
m = st.columns(5)
m[0].metric("|A|", f"{ov['A']:,}")
m[1].metric("|B|", f"{ov['B']:,}")
m[2].metric("|A ∩ B|", f"{ov['both']:,}")
m[3].metric("Jaccard", f"{ov['jaccard']:.3f}", help="|A ∩ B| / |A ∪ B|")
m[4].metric("B rows not in A's pool", f"{outside:,}",
            help="selected by B, absent from A's run: two runs over different pools (matched by example id)")
st.plotly_chart(selection_figures.overlap_bar(ov), width="stretch", key="overlap_bar")

# ----------------------------------------------------------------------------- the rank
if selections.differ_in_rank_only(spec_a, spec_b):
    st.subheader(f"What enters and leaves from r = {spec_a.rank} to r = {spec_b.rank}")
    enters, leaves = selections.enters_leaves(a, b)
    c = st.columns(2)
    c[0].markdown(f"**Enter** ({len(enters):,}): selected at r = {spec_b.rank}, not at r = {spec_a.rank}")
    c[0].dataframe(enters.drop(columns="side"), hide_index=True, width="stretch", key="enters_table",
                   column_config={"score A": st.column_config.NumberColumn(format="%.3f"),
                                  "score B": st.column_config.NumberColumn(format="%.3f")})
    c[1].markdown(f"**Leave** ({len(leaves):,}): selected at r = {spec_a.rank}, not at r = {spec_b.rank}")
    c[1].dataframe(leaves.drop(columns="side"), hide_index=True, width="stretch", key="leaves_table",
                   column_config={"score A": st.column_config.NumberColumn(format="%.3f"),
                                  "score B": st.column_config.NumberColumn(format="%.3f")})
if spec_a.source == "gist":
    with st.spinner("Re-scoring A at every rank ..."):
        curve = ui.folder_view(selections.rank_curve, spec_a.run, spec_a.rule, spec_a.budget, spec_a.kind,
                               sorted(b.ids), files=selections.watched_files(spec_a.run))
    st.plotly_chart(selection_figures.rank_curve(curve, spec_a.rank, spec_b.rank if spec_b.source == "gist" and
                                                 spec_b.run == spec_a.run else None),
                    width="stretch", key="rank_curve")
    st.caption(f"A's rule and budget at every rank 1..{len(curve)}: Jaccard with B, and with the rank one below "
               f"(how much one step changes); {len(curve)} re-scorings in {curve.attrs.get('ms', 0):.0f} ms.")

# ----------------------------------------------------------------------------- groups
st.subheader("Per group")
by = st.radio("Group by", selections.GROUPINGS, horizontal=True, key="sbs_by")
counts = selections.group_counts(a, b, by)
st.plotly_chart(selection_figures.group_bars(counts, by), width="stretch", key="group_bars")

# ----------------------------------------------------------------------------- the map
st.subheader(f"On the map of A's run ({spec_a.run.name})")
map_rank = spec_a.rank if spec_a.source == "gist" else ui.settings(spec_a.run)["rank"]
md = ui.map_coords(spec_a.run, map_rank, "pca")
frame = a.frame.assign(side=selections.side_of(a, b))
pts = pool_map.map_frame(md, frame, "side", list(rundir.target_groups(rundir.target_frame(spec_a.run))))
st.plotly_chart(selection_figures.side_map(pts, md.targets, md.method), width="stretch", key="side_map")
st.caption(f"PCA of the projected gradients at rank {map_rank}"
           + (f" ({len(pts):,} of {len(frame):,} rows drawn)" if len(pts) < len(frame) else "")
           + (f"; {outside:,} of B's rows are not in this pool, so not drawn" if outside else ""))

# ----------------------------------------------------------------------------- rows only in one
st.subheader("Rows")
tabs = st.tabs([f"only A ({ov['only A']:,})", f"only B ({ov['only B']:,})", f"both ({ov['both']:,})"])
for tab, side in zip(tabs, ("only A", "only B", "both")):
    tab.dataframe(selections.rows(a, b, side).drop(columns="side"), hide_index=True, width="stretch",
                  key=f"rows_{side}", column_config={"score A": st.column_config.NumberColumn(format="%.3f"),
                                                     "score B": st.column_config.NumberColumn(format="%.3f")})
