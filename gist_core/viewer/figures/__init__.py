"""The dashboard's and the notebook's figures: plotly only (no Streamlit, no run-folder paths).

One module per page (spectrum, scores, pool_map, curvature, compare); a method's own figures live in its folder
(methods/<name>/figures.py). Each builder takes what the viewer computes (data frames, dataclasses) and returns a
`plotly.graph_objects.Figure`; the pages add the widgets, keys and selection callbacks. Colours come from one
palette (palette.py): the same ground-truth group, method family or mark has the same colour in every figure.
"""
