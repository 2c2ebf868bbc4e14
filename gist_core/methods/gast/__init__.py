"""GAST (arXiv 2603.09865, EACL 2026): data selection inside every LoRA training step, separately per layer. Each
layer's adapter is updated only with the batch examples whose per-layer gradient aligns with a support gradient."""
