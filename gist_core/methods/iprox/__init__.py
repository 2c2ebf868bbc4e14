"""Iprox (arXiv 2602.17835, ICLR 2026): an influence-preserving low-rank proxy built from the target model itself.
Stage 1 (IPSVD) factorises every linear layer so that per-layer gradient influence changes least; stage 2
aligns the proxy's factor gradients with the target's; selection then runs on the cheaper proxy."""
