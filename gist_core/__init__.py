"""GIST Lab: targeted data selection for instruction tuning through gradient geometry.

Notebook use (see notebooks/walkthrough.ipynb):
    from gist_core import RunConfig, run_select, rescore
    summary = run_select(RunConfig(model=..., train=..., target=..., budget=0.05, rank=16), "runs/mine")
"""
import importlib

__version__ = "0.1.0"

# the notebook's entry points, each from the module that defines it; lazy, because `import gist_core` must stay
# cheap (no torch) until one is used
_EXPORTS = {
    "RunConfig": "gist_core.config", "demo_config": "gist_core.config", "run_select": "gist_core.runner.pipeline",
    "rescore": "gist_core.methods.gist.rescore",
    "CompareConfig": "gist_core.config", "run_compare": "gist_core.runner.compare",
    "GeometryConfig": "gist_core.config", "run_geometry": "gist_core.runner.geometry",
    "ClusterConfig": "gist_core.methods.gradientspace.config", "run_cluster": "gist_core.methods.gradientspace.cluster_stage",
    "ExpertConfig": "gist_core.methods.gradientspace.config", "run_experts": "gist_core.methods.gradientspace.experts_stage",
    "load_examples": "gist_core.data.examples", "GistError": "gist_core.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'gist_core' has no attribute {name!r}")
