"""GIST Lab dashboard: home page listing the run directories (pages/ will hold the views)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from gist_core.runs import list_runs, runs_root

st.set_page_config(page_title="GIST Lab", layout="wide")
st.title("GIST Lab")
st.caption("Targeted data selection for instruction tuning through gradient geometry. "
           "Scores are cosines in [-1, 1]: higher = better aligned with the target task.")

root = runs_root()
runs = list_runs(root)
st.subheader(f"Runs in `{root}`")
if not runs:
    st.info("No runs yet. Start one from a terminal: `gist-lab demo` (bundled tiny model and corpus), "
            "or `gist-lab select --model ... --train ... --target ...`.")
else:
    st.dataframe(pd.DataFrame(runs), width="stretch", hide_index=True)
