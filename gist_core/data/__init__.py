"""Examples in: loading and validation, prompt formatting, ground-truth labels, the synthetic corpus."""
