"""The run's model, loaded once per process: the base model and tokenizer, and the adapter currently on it.

peft injects LoRA layers into the base model in place, so "the base model" and "the model with warm-up
adapter E" are one object at different times; this cache is the one place that knows which it is now.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gist_core.config import RunConfig
from gist_core.model.load import load_adapter, load_base_model


class ModelCache:
    def __init__(self, cfg: RunConfig, folder: str):
        """`folder`: what `--model` resolved to (a GGUF file or registry name is already converted)."""
        self.cfg, self.folder = cfg, folder
        self._model = self._tok = self._peft = None

    def tokenizer_and_model(self) -> tuple[Any, Any]:
        if self._model is None:
            torch.manual_seed(self.cfg.seed)
            self._model, self._tok = load_base_model(self.folder, self.cfg.dtype, self.cfg.device,
                                                     self.cfg.trust_remote_code, self.cfg.model_revision)
        return self._tok, self._model

    def replace_base(self, model: Any) -> None:
        """The base model after a LoRA wrapper was taken off it again (preflight, warm-up)."""
        self._model, self._peft = model, None

    def base_model(self) -> Any:
        """The base model with any adapter taken out."""
        self.tokenizer_and_model()
        if self._peft is not None:
            self._model, self._peft = self._peft.unload(), None
        return self._model

    def adapter_model(self, adapter_dir: str | Path) -> Any:
        """Base model + the adapter saved in `adapter_dir`; LoRA trainable, eval mode."""
        self._peft = load_adapter(self.base_model(), adapter_dir).eval()
        return self._peft
