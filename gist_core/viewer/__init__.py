"""What the dashboard and the notebook show: pure functions over a run folder (no Streamlit), and plotly figures.

`gist_core.viewer.views` gathers every function (one module per topic: rundir, labels, rescore, breakdowns,
brushing, examples, spectrum, pool_map, progress, compare, curvature); `gist_core.viewer.figures` draws them.
Run-folder paths come from gist_core.store.layout only.
"""
