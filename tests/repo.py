"""Paths every test shares: the repository root (tests live in folders that mirror gist_core/)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
