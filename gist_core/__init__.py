"""GIST Lab: targeted data selection for instruction tuning through gradient geometry."""

__version__ = "0.1.0"
