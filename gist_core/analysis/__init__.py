"""Curvature of LoRA blocks: exact Hessian, Gauss-Newton, Fisher, Adam's diagonal, and numbers about them."""
