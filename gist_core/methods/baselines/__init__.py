"""The baselines people use: scores.py (raw-gradient cosine, embeddings, length, random, oracle: math on arrays) and
stages.py (their features in a compare's run folder)."""
