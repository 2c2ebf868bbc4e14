"""A proxy on disk: an ordinary model folder (config.json, model.safetensors, tokenizer) plus `iprox.json`,
which lists the factor layers and their ranks. Loading builds the architecture from its config, puts empty
factor layers where the plan says, and fills every tensor from the safetensors file (strictly: a missing or
extra tensor is an error). `gist_core.model.load.load_base_model` loads such a folder like any model, so it is
a `--model` everywhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModelForCausalLM

from gist_core.errors import ModelError
from gist_core.methods.iprox.proxy import LayerPlan, factor_layers, skeleton
from gist_core.store.atomic import atomic_folder
from gist_core.store.layout import extraction_meta, proxy_plan

WEIGHTS = "model.safetensors"


def is_proxy_folder(folder: str | os.PathLike) -> bool:
    return proxy_plan(folder).is_file()


def save_proxy(model, tokenizer, folder: str | os.PathLike, meta: dict) -> None:
    """Write the proxy atomically: a temp folder beside `folder`, renamed into place when complete."""
    with atomic_folder(folder) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / WEIGHTS))  # shared (tied) tensors stored once
        layers = {n: {"rank": m.rank, "out_features": m.out_features, "in_features": m.in_features,
                      "bias": m.bias is not None} for n, m in factor_layers(model).items()}
        proxy_plan(tmp).write_text(json.dumps({**meta, "layers": layers}, indent=1))


def proxy_target(folder: str | os.PathLike) -> str | None:
    """The target model a proxy (Iprox or a layer-extraction baseline) was built from; None for any other model."""
    for path in (proxy_plan(folder), extraction_meta(folder)):
        if path.is_file():
            try:
                return json.loads(path.read_text())["target_folder"]
            except (OSError, ValueError, KeyError) as e:
                raise ModelError(f"{path}: unreadable proxy record ({e})") from None
    return None


def read_plan(folder: str | os.PathLike) -> dict:
    path = proxy_plan(folder)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: unreadable proxy plan ({e})") from None


def load_proxy(folder: str | os.PathLike, dtype=None):
    """The stored proxy as a causal LM (float32 unless `dtype`), on the CPU."""
    folder = Path(folder)
    plan = read_plan(folder)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype) if dtype else AutoModelForCausalLM.from_config(config)
    skeleton(model, [LayerPlan(n, v["out_features"], v["in_features"], v["rank"]) for n, v in plan["layers"].items()])
    try:
        load_model(model, str(folder / WEIGHTS), strict=True)
    except (RuntimeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{folder / WEIGHTS}: does not match {proxy_plan(folder).name} ({first})") from None
    return model.eval()
