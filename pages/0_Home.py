"""Home: the runs under runs_root() and a one-click bundled demo (the navigation is app.py's, from the registry)."""
from __future__ import annotations

import streamlit as st

from gist_core.app import ui
from gist_core.data.corpus import DEFAULT_DEMO_TARGET
from gist_core.methods import registry
from gist_core.runner import launcher
from gist_core.store.runs import runs_root
from gist_core.viewer import labels, progress

ui.page_setup("Home")
st.title("GIST Lab")
st.caption("Targeted data selection for instruction tuning through gradient geometry. " + labels.SCORE_SEMANTICS)

root = runs_root()
DEMO = f"demo-{DEFAULT_DEMO_TARGET}"


def launch_demo() -> None:
    """Start `gist-lab demo` into runs/demo-<target> unless it is already done or going; then open the Run page."""
    d = root / DEMO
    status = progress.run_state(d)["status"] if d.exists() else "empty"
    if status not in ("done", "running"):
        try:
            launcher.launch(d, launcher.demo_args(d))
        except launcher.LaunchError as e:
            st.error(str(e))
            return
    ui.set_run(DEMO)
    st.switch_page(ui.PAGES["run"], query_params={"run": DEMO})


left, right = st.columns([3, 2])
with left:
    st.markdown("Warm up a LoRA adapter, find the target task's gradient subspace, score every pool example "
                "by its cosine with the target directions, and inspect the selection.")
with right:
    if st.button("Launch the bundled demo", icon=":material/rocket_launch:", type="primary", key="launch_demo",
                 help=f"tiny model + synthetic pool, target '{DEFAULT_DEMO_TARGET}' (about 2 minutes on 2 CPU cores)"):
        launch_demo()
    st.page_link(ui.PAGES["run"], label="Configure your own run", icon=":material/play_arrow:")

st.subheader(f"Runs in `{root}`")
table = progress.runs_table(root)
if table.empty:
    st.info("No runs yet. Launch the bundled demo above, configure one on the Run page, or from a terminal: "
            "`gist-lab demo` / `gist-lab select --model ... --train ... --target ...`.")
else:
    st.dataframe(table, width="stretch", hide_index=True,
                 column_config={"precision": st.column_config.NumberColumn(format="%.3f"),
                                "random precision": st.column_config.NumberColumn(format="%.3f")})
    st.markdown("**Open a run**")
    for name in table["run"]:
        if problem := ui.run_problem(name):  # e.g. 'my run' made from a terminal: listed, never opened
            cols = st.columns([1, 7])
            cols[0].markdown(f"`{name}`")
            cols[1].caption(f"not opened by the dashboard: {problem}")
            continue
        cols = st.columns(8)
        cols[0].markdown(f"`{name}`")
        for col, (page, label) in zip(cols[1:], [("run", "Run"), ("spectrum", "Spectrum"), ("scores", "Scores"),
                                                  ("examples", "Examples"), ("map", "Map"),
                                                  ("curvature", "Curvature"), ("compare", "Compare")]):
            col.page_link(ui.PAGES[page], label=label, query_params={"run": name})

st.divider()
st.markdown("**Every page**")
for page in registry.pages():
    st.page_link(page.file, label=f"{page.title}: {page.about}", icon=page.icon)
