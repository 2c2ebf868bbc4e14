"""Examples: filterable, sortable table of the pool; ticked rows leave or join the working selection; drill-down on
one example; export of the working selection."""
from __future__ import annotations

import streamlit as st

from gist_core.app import curation_ui, ui
from gist_core.viewer import curation as curation_view
from gist_core.viewer import examples, rundir
from gist_core.viewer.figures import scores as scores_figures

MAX_ROWS = 2000  # rows sent to the browser; filters narrow the rest

ui.page_setup("Examples")
st.title("Examples")
run_dir = ui.require_scores(ui.run_picker())
run = ui.folder_view(rundir.load_run, run_dir)
kind = ui.score_radio(run_dir, key="score_examples")
s = {**ui.settings(run_dir), "kind": kind}
rs = ui.rescored(run_dir, s)
ui.settings_caption(s, rs)
ui.semantics_caption()

curated = curation_ui.working(run_dir)
if curated is not None:
    curation_ui.status(run_dir, curated, key="ex_cur")
    curation_ui.shown_selection(run_dir, curated, rs, key="ex_cur")
f = curation_view.mark_working(rs.frame, curated.working if curated is not None else ())
c = st.columns([3, 2, 2, 2, 2])
which = c[0].radio("Show", ["selected", "working selection", "all", "not selected"], horizontal=True, key="ex_which",
                   help="selected: the selection at this rank, rule and budget; working selection: the run's "
                        "selection as edited by hand (Curate page)")
sources = c[1].multiselect("Source", examples.options(f, "source"), key="ex_sources")
skills = c[2].multiselect("Skill", examples.options(f, "skill"), key="ex_skills")
kinds = c[3].multiselect("Kind", examples.options(f, "kind"), key="ex_kinds")
domains = c[4].multiselect("Domain", examples.options(f, "domain"), key="ex_domains",
                           help="code / math / writing / other by a keyword rule: a reading aid, not ground truth")
c2 = st.columns([3, 2, 1])
text = c2[0].text_input("Search prompt / response / id", key="ex_text")
sort_by = c2[1].selectbox("Sort by", ["score", "rank", "n_tokens", "id"], key="ex_sort")
desc = c2[2].toggle("descending", value=True, key="ex_desc")
rows = examples.filter_frame(f, sources=sources, skills=skills, kinds=kinds, selected=which, text=text, domains=domains)
rows = rows.sort_values(sort_by, ascending=not desc, kind="stable")
shown = rows.head(MAX_ROWS)
st.caption(f"{len(rows):,} matching examples" + (f"; showing the first {MAX_ROWS:,}" if len(rows) > MAX_ROWS else "")
           + ". Tick rows to remove them from (or add them to) the working selection; the first ticked row is shown "
             "in detail below. Click a column header to re-sort the shown rows.")
columns = examples.table_columns(shown)
columns.insert(columns.index("selected") + 1 if "selected" in columns else len(columns), "working")
event = st.dataframe(shown[columns], hide_index=True, width="stretch", height=380, key="ex_table",
                     on_select="rerun", selection_mode="multi-row",
                     column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                    "n_tokens": st.column_config.NumberColumn("length (tokens)"),
                                    "working": st.column_config.CheckboxColumn("in working selection")})
picked = [p for p in (event.selection.rows if event is not None else []) if p < len(shown)]
if curated is not None and picked:
    curation_ui.edit_buttons(run_dir, curated, shown.iloc[picked]["id"].astype(str).tolist(), "examples table",
                             key="ex_edit")
with st.expander("Export the working selection", icon=":material/download:"):
    curation_ui.downloads(run_dir, None, "the working selection", f"{run_dir.name}-working", key="ex_export")
    st.caption("The rows `gist-lab export` writes: the original pool rows (or their chat turns), in pool order, "
               "with a provenance record. Edit the working selection here, on the Map, Scores or Curate pages.")

st.subheader("Drill-down")
if picked:
    row = int(shown.iloc[picked[0]]["row"])
elif len(shown):
    row = int(shown.iloc[0]["row"])
else:
    st.info("No example matches the filters.")
    st.stop()
d = examples.example_detail(rs, row)
st.markdown(f"**{d['id']}** · score **{d['score']:.4f}** · rank {d['rank']:,} of {len(f):,} · "
            f"{examples.label_line(d)} · {d['n_tokens']} tokens")
st.markdown("selected under global top-k: **{}** · under per-subtask quota: **{}**".format(
    "yes" if d["selected"]["global"] else "no", "yes" if d["selected"]["subtask"] else "no"))
t1, t2 = st.columns(2)
ui.long_text(t1, "Prompt", d["prompt"], key=f"ex_prompt_{row}")
ui.long_text(t2, "Response", d["response"], key=f"ex_response_{row}")
with st.expander("As the model sees it (the run's tokenizer and chat template)", icon=":material/code:"):
    try:
        mi = ui.model_input(run_dir, row)
    except Exception as e:  # a model folder that moved or a tokenizer that will not load: say so, keep the page
        st.warning(f"Cannot load the run's tokenizer ({type(e).__name__}: {str(e).splitlines()[0][:200]})")
    else:
        st.caption(f"{mi['tokenizer']} of `{mi['model']}`; "
                   f"{'its chat template' if mi['chat_template'] else 'the plain template (the tokenizer has no chat template)'}"
                   f"; special tokens shown. {mi['n_prompt']} prompt tokens (not in the loss), {mi['n_response']} "
                   f"response tokens (the loss, and so the gradient)" + ("; the prompt was cut to fit max_length"
                                                                         if mi["truncated"] else "") + ".")
        m1, m2 = st.columns(2)
        m1.markdown("Input before the response")
        m1.code(mi["prompt"], language=None, wrap_lines=True)
        m2.markdown("Tokens in the loss")
        m2.code(mi["response"], language=None, wrap_lines=True)
g1, g2 = st.columns(2)
g1.plotly_chart(scores_figures.example_cosines(d["cosines"]), width="stretch", key="ex_cosines")
g2.markdown(f"Nearest target examples at rank r = {s['rank']}")
g2.dataframe(ui.folder_view(examples.nearest_targets, run_dir, row, s["rank"]), hide_index=True, width="stretch",
             column_config={"cosine": st.column_config.NumberColumn(format="%.4f")})
