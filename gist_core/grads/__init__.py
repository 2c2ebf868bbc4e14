"""Per-example LoRA gradients."""
