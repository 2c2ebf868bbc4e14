"""GradientSpace (arXiv 2512.06678), a reconstruction from the abstract: cluster the pool in full-dimensional
LoRA-gradient space through a streaming rank-K sketch, then assign clusters in the sketch's coordinates."""
