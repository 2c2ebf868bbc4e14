"""Examples: filterable, sortable table of the pool; drill-down on one example; export of the selection."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
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

f = rs.frame
c = st.columns([2, 2, 2, 2, 2])
which = c[0].radio("Show", ["selected", "all", "not selected"], horizontal=True, key="ex_which")
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
           + ". Click a row for its details; click a column header to re-sort the shown rows.")
event = st.dataframe(shown[examples.table_columns(shown)], hide_index=True, width="stretch", height=380, key="ex_table",
                     on_select="rerun", selection_mode="single-row",
                     column_config={"score": st.column_config.NumberColumn(format="%.4f"),
                                    "n_tokens": st.column_config.NumberColumn("length (tokens)")})

st.download_button(f"Export the current selection ({rs.k:,} examples, JSONL)", data=examples.export_jsonl(rs.selection),
                   icon=":material/download:",
                   file_name=f"{run_dir.name}-selected-r{s['rank']}-{s['balance']}.jsonl",
                   mime="application/jsonl", key="ex_download",
                   help="one JSON object per line: id, prompt, response, source, skill, subtask, kind, score")

st.subheader("Drill-down")
picked = event.selection.rows if event is not None else []
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
