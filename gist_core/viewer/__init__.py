"""What the dashboard and the notebook show: pure functions over a run folder (no Streamlit), one module per topic
(rundir, labels, rescore, breakdowns, brushing, examples, spectrum, pool_map, progress, compare, curvature), and the
plotly figures in gist_core.viewer.figures. A method's own views are in methods/<name>/view.py.
Run-folder paths come from gist_core.store.layout only.
"""
