"""Sentence embeddings from the registry's all-MiniLM-L6-v2 (`gist-lab models fetch minilm`), without
sentence-transformers.

The fetched folder is a sentence-transformers model: modules.json chains Transformer -> Pooling (mean over
tokens, 1_Pooling/config.json) -> Normalize, with max_seq_length 256 (sentence_bert_config.json). That is
what `minilm_embeddings` computes with plain transformers: the BERT's last hidden states, averaged over the
tokens the attention mask keeps (padding excluded), L2-normalised. The folder's configuration is checked
first, so a model with another pooling is refused instead of being embedded wrongly.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from gist_core.errors import ModelSourceError
from gist_core.model.registry import embedder_folder

EXPECTED_MODULES = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                    "sentence_transformers.models.Normalize")


def minilm_embeddings(texts: Sequence[str], batch_size: int = 64, *, name: str = "minilm",
                      device: str = "cpu") -> np.ndarray:
    """(N, 384) float32, one unit-length row per text, in the order given (texts longer than 256 tokens are cut)."""
    tokenizer, model, max_length = _load(str(embedder_folder(name)), device)
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    # Batches of similar length waste less compute on padding (sentence-transformers sorts the same way).
    order = np.argsort([-len(t) for t in texts], kind="stable")
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            enc = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt").to(device)
            hidden = model(**enc).last_hidden_state
            out[rows] = _mean_pool_normalise(hidden, enc["attention_mask"]).float().cpu().numpy()
    return out


def _mean_pool_normalise(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


@functools.lru_cache(maxsize=2)
def _load(folder: str, device: str):
    max_length = _check_folder(Path(folder))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).to(device).eval()
    return tokenizer, model, max_length


def _check_folder(folder: Path) -> int:
    """The folder must be Transformer -> mean Pooling -> Normalize; -> its max_seq_length."""
    modules = tuple(m.get("type") for m in json.loads((folder / "modules.json").read_text()))
    pooling = json.loads((folder / "1_Pooling" / "config.json").read_text())  # a model folder's, not a run folder's
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode_") and v)
    if modules != EXPECTED_MODULES or modes != ["pooling_mode_mean_tokens"]:
        raise ModelSourceError(f"{folder}: expected Transformer -> mean Pooling -> Normalize, found "
                               f"{', '.join(m or '?' for m in modules)} with {', '.join(modes) or 'no pooling'}")
    bert_config = folder / "sentence_bert_config.json"  # an embedding model's, not a run folder's
    return int(json.loads(bert_config.read_text()).get("max_seq_length", 256)) if bert_config.exists() else 256
