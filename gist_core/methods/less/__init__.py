"""LESS (Xia et al., ICML 2024): features.py (the Adam step, the seeded projection, the scores) and stages.py (its
features in a compare's run folder)."""
