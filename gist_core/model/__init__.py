"""Models: loading (incl. GGUF and the registry), LoRA training, downstream evaluation, the bundled tiny LM."""
