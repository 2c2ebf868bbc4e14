"""Shared fixtures: offline Hugging Face, a micro Llama with the bundled tokenizer, a micro corpus."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="gist-hf-"))

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data"


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The bundled tokenizer when present; else one trained here on pretraining text (a second)."""
    if (SAMPLE / "tiny-lm" / "tokenizer.json").exists():
        return SAMPLE / "tiny-lm"
    from gist_core.data.corpus import pretraining_text
    from gist_core.model.tiny import build_tokenizer
    out = tmp_path_factory.mktemp("tok")
    build_tokenizer(pretraining_text(3000), 600).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A randomly initialised 2-layer Llama (hidden 32) saved like any HF model, plus the tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id))
    out = tmp_path_factory.mktemp("micro-lm")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def randomise_lora_b(model, seed: int, scale: float):
    """LoRA's B is zero at init, which makes every lora_A gradient and the adapter's effect exactly zero: give B
    seeded normal values (scale x N(0, 1)) so both are exercised. Returns the model."""
    import torch  # here, not at the top: collecting the tests must not wait for torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def micro_corpus(tmp_path_factory) -> dict:
    """A 240-example pool and a 'lookup' target (4 subtasks x 3 val) from the real generator."""
    from gist_core.data.corpus import CorpusConfig, build_pool, build_targets
    cfg = CorpusConfig(n_pool=240, n_val_per_subtask=3, n_test_per_subtask=5, seed=1)
    targets, reserved = build_targets(cfg)
    pool = build_pool(cfg, reserved)
    d = tmp_path_factory.mktemp("corpus")
    return {"pool": write_jsonl(d / "pool.jsonl", pool), "val": write_jsonl(d / "val.jsonl", targets["lookup"]["val"]),
            "test": write_jsonl(d / "test.jsonl", targets["lookup"]["test"]), "rows": pool}


def micro_select_argv(model_dir, corpus: dict, out) -> list[str]:
    """`gist-lab select` on the micro model and corpus: the run the scale-out and resume tests compare."""
    return ["select", "--model", str(model_dir), "--train", str(corpus["pool"]), "--target", str(corpus["val"]),
            "--budget", "0.1", "--rank", "4", "--r-max", "8", "--epochs", "2", "--lr", "5e-3", "--batch-size", "8",
            "--out", str(out), "--quiet"]


def assert_same_scores(a: Path, b: Path) -> None:
    """Two run folders hold the same scores (<= 1e-6) for the same ids and the same selection."""
    import numpy as np
    import pandas as pd
    x, y = pd.read_parquet(a / "scores.parquet"), pd.read_parquet(b / "scores.parquet")
    assert (x["id"] == y["id"]).all()
    assert np.abs(x["score"].to_numpy() - y["score"].to_numpy()).max() <= 1e-6
    assert (x["selected_global"] == y["selected_global"]).all()
