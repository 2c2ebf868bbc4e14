"""GIST Lab dashboard: the navigation over every registered page (gist_core/methods/registry.py), by section.

Run with `gist-lab app` or `streamlit run app.py`; GIST_LAB_RUNS picks the runs folder. Each page is a file
under pages/ (Home is pages/0_Home.py); a method's page is registered with its method.
"""
from __future__ import annotations

import streamlit as st

from gist_core.methods import registry

sections: dict[str, list] = {}
for entry in registry.ENTRIES:
    for page in entry.pages:
        sections.setdefault(entry.section, []).append(
            st.Page(page.file, title=page.title, icon=page.icon, url_path=page.key, default=page.key == "home"))
# expanded: with 13 pages Streamlit would fold the list after ten ("View 3 more", hiding the Methods section)
st.navigation(sections, expanded=True).run()
