"""Streamlit glue: the run picker, shared settings, and the launcher for detached runs."""
