"""The run folder: every path in it, checked artefact save/load, the manifest, row stores, atomic writes."""
