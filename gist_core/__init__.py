"""GIST Lab: targeted data selection for instruction tuning through gradient geometry.

Notebook use:
    from gist_core import RunConfig, run_select, rescore
    summary = run_select(RunConfig(model=..., train=..., target=..., budget=0.05, rank=16), "runs/mine")
"""

__version__ = "0.1.0"
__all__ = ["RunConfig", "run_select", "rescore", "demo_config", "load_examples"]


def __getattr__(name):  # lazy: `import gist_core` stays cheap (no torch) until an entry point is used
    if name in ("RunConfig", "run_select", "rescore", "demo_config"):
        from gist_core import pipeline
        return getattr(pipeline, name)
    if name == "load_examples":
        from gist_core.data import load_examples
        return load_examples
    raise AttributeError(f"module 'gist_core' has no attribute {name!r}")
