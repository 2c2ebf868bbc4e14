"""The batched per-example gradient path equals the one-example-at-a-time loop (DESIGN §4)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import randomise_lora_b

from gist_core.config import LoraSettings
from gist_core.errors import GradientError
from gist_core.grads.per_example import GradientEngine, length_sorted_batches, loop_grads, param_blocks
from gist_core.model.load import attach_lora

TOL = 1e-5


def _perturb_lora_b(model, seed=0):
    return randomise_lora_b(model, seed, 0.05)


def _batch(vocab: int, lengths: list[int], prompt_len: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]
    labels = [[-100] * min(prompt_len, len(x) - 1) + x[min(prompt_len, len(x) - 1):] for x in ids]
    return ids, labels


def _check(model, vocab, pad_id, lengths=(5, 9, 12, 7)):
    ids, labels = _batch(vocab, list(lengths))
    engine = GradientEngine(model, pad_id)
    fast, losses = engine.flat_grads(ids, labels)
    ref = loop_grads(model, ids, labels, pad_id)
    assert fast.shape == ref.shape == (len(lengths), engine.dim)
    assert ref.abs().max() > 0
    assert (fast - ref).abs().max().item() <= TOL
    return engine, ids, labels, fast


def _llama(vocab=97, **kw):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, **kw))


def test_llama_batched_equals_loop():
    model = attach_lora(_llama(), LoraSettings(r=4))
    _perturb_lora_b(model)
    engine, ids, labels, fast = _check(model, 97, pad_id=0)
    # every LoRA A and B block got a non-zero gradient
    for b in engine.blocks:
        assert fast[:, b.offset:b.offset + b.size].abs().max() > 0, b.name


def test_gpt2_batched_equals_loop():
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    base = GPT2LMHeadModel(GPT2Config(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    model = attach_lora(base, LoraSettings(r=4))
    _perturb_lora_b(model, seed=1)
    _check(model, 101, pad_id=0)


def test_bundled_tiny_model_batched_equals_loop(micro_model_dir):
    from gist_core.model.load import load_base_model
    base, tok = load_base_model(str(micro_model_dir))
    model = attach_lora(base, LoraSettings())
    _perturb_lora_b(model, seed=2)
    _check(model, len(tok), tok.pad_token_id, lengths=(14, 6, 20))


def test_gradient_independent_of_batch_company():
    model = attach_lora(_llama(), LoraSettings(r=4))
    _perturb_lora_b(model)
    ids, labels = _batch(97, [6, 15, 9])
    engine = GradientEngine(model, 0)
    together, _ = engine.flat_grads(ids, labels)
    alone, _ = engine.flat_grads(ids[:1], labels[:1])
    assert (together[0] - alone[0]).abs().max() <= TOL


def test_fused_projection_equals_flat_times_basis():
    model = attach_lora(_llama(), LoraSettings(r=4))
    _perturb_lora_b(model)
    ids, labels = _batch(97, [6, 11, 8])
    engine = GradientEngine(model, 0)
    flat, _ = engine.flat_grads(ids, labels)
    basis = torch.linalg.qr(torch.randn(engine.dim, 5, generator=torch.Generator().manual_seed(0)))[0]
    proj, _ = engine.projected_grads(ids, labels, basis)
    assert torch.allclose(proj, flat @ basis, atol=1e-5)


def test_non_finite_gradients_are_refused():
    model = attach_lora(_llama(), LoraSettings(r=4))
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_A" in n).fill_(float("inf"))
    ids, labels = _batch(97, [6, 7])
    with pytest.raises(GradientError, match="non-finite"):
        GradientEngine(model, 0).flat_grads(ids, labels)


def test_model_without_trainable_parameters_is_refused():
    with pytest.raises(GradientError, match="no trainable"):
        param_blocks(_llama().requires_grad_(False))


def test_stored_norm_equals_a_one_at_a_time_loop():
    """The projection pass keeps each pool gradient's whole norm beside its coordinates: the same number as
    |g| of plain autograd, one example at a time, and the same definition as raw cosine's feature store."""
    from gist_core.grads.per_example import loop_grads
    from gist_core.methods.baselines.scores import rawcos_features
    model = attach_lora(_llama(), LoraSettings(r=4))
    _perturb_lora_b(model)
    ids, labels = _batch(97, [6, 11, 8, 3])
    engine = GradientEngine(model, 0)
    basis = torch.linalg.qr(torch.randn(engine.dim, 5, generator=torch.Generator().manual_seed(0)))[0]
    proj, _ = engine.projected_grads(ids, labels, basis, with_norms=True)
    naive = loop_grads(model, ids, labels, 0).double()
    assert proj.shape == (4, 6)
    torch.testing.assert_close(proj[:, -1].double(), naive.norm(dim=1), rtol=1e-5, atol=0)
    torch.testing.assert_close(proj[:, :5].double(), naive @ basis.double(), rtol=1e-4, atol=1e-6)
    raw = rawcos_features(naive.float(), naive[:2].float())
    torch.testing.assert_close(raw[:, -1], proj[:, -1], rtol=1e-6, atol=0)


@pytest.mark.parametrize("max_tokens", [None, 1, 40, 100])
def test_length_sorted_batches_keep_every_row_once_under_the_token_cap(max_tokens):
    lengths = [7, 3, 25, 3, 12, 40, 9, 18, 5, 30, 11, 2]
    batches = list(length_sorted_batches(lengths, range(len(lengths)), 4, max_tokens))
    flat = [i for b in batches for i in b]
    assert flat == sorted(range(len(lengths)), key=lambda i: (lengths[i], i))  # each row once, shortest first
    for b in batches:
        assert 1 <= len(b) <= 4
        if max_tokens and len(b) > 1:
            assert len(b) * max(lengths[i] for i in b) <= max_tokens
    if max_tokens is None:
        assert [len(b) for b in batches] == [4, 4, 4]


def test_large_vocabularies_get_fewer_rows_a_batch():
    from gist_core.grads.per_example import LOGITS_BUDGET_BYTES, logit_token_cap
    assert logit_token_cap(49_152) >= 16 * 256  # SmolLM2's default batch is not split
    cap = logit_token_cap(262_144)  # Gemma 3
    assert cap < 16 * 256 and cap * 262_144 * 4 * 3 <= LOGITS_BUDGET_BYTES


def test_capped_batches_give_the_same_gradients(micro_model_dir):
    """The engine splits batches by tokens for large vocabularies; the gradients must not depend on it."""
    from gist_core.data.formatting import Tokenized
    from gist_core.grads.per_example import collect_flat
    from gist_core.model.load import load_base_model
    model, tok = load_base_model(str(micro_model_dir))
    peft = attach_lora(model, LoraSettings(r=4), seed=0)
    randomise_lora_b(peft, 1, 0.05)
    g = torch.Generator().manual_seed(0)
    ids = [torch.randint(3, 200, (int(n),), generator=g).tolist() for n in (5, 9, 14, 20, 31)]
    labels = [[-100] * (len(x) // 2) + x[len(x) // 2:] for x in ids]
    toks = Tokenized(input_ids=ids, labels=labels, n_truncated=0, n_response_tokens=[len(x) - len(x) // 2 for x in ids])
    engine = GradientEngine(peft, tok.pad_token_id)
    whole = collect_flat(engine, toks, range(5), 8)
    engine.max_batch_tokens = 30  # one or two rows a batch
    split = collect_flat(engine, toks, range(5), 8)
    ref = loop_grads(peft, ids, labels, tok.pad_token_id)
    assert torch.allclose(torch.from_numpy(split), ref, rtol=1e-4, atol=1e-6)
    assert torch.allclose(torch.from_numpy(whole), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module_by_module", [False, True])
def test_both_projection_paths_equal_a_one_at_a_time_loop(monkeypatch, module_by_module):
    """Small models join a batch's (B, D) gradients and project them in column chunks; large ones project each
    module's gradients as the backward pass makes them (FLAT_BUDGET_BYTES decides). Both against plain autograd."""
    from gist_core.grads import per_example
    if module_by_module:
        monkeypatch.setattr(per_example, "FLAT_BUDGET_BYTES", 0)
    monkeypatch.setattr(per_example, "PROJECT_CHUNK", 100)  # several chunks, one not a module boundary
    model = attach_lora(_llama(), LoraSettings(r=4))
    _perturb_lora_b(model, seed=3)
    ids, labels = _batch(97, [6, 11, 8, 3])
    engine = GradientEngine(model, 0)
    basis = torch.linalg.qr(torch.randn(engine.dim, 7, generator=torch.Generator().manual_seed(1)))[0]
    proj, _ = engine.projected_grads(ids, labels, basis, with_norms=True)
    naive = loop_grads(model, ids, labels, 0).double()
    torch.testing.assert_close(proj[:, :7].double(), naive @ basis.double(), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(proj[:, -1].double(), naive.norm(dim=1), rtol=1e-5, atol=0)


def test_per_example_loss_is_float64_close_at_a_large_vocabulary():
    """The loss behind every gradient, against float64 arithmetic on the same float32 logits, at SmolLM2's
    vocabulary: the (B, V, T) layout of cross_entropy was measured 2.3e-4 off per token on the CPU."""
    from gist_core.grads.per_example import per_example_loss
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 48, 49_152, generator=g) * 4
    labels = torch.randint(0, 49_152, (2, 48), generator=g)
    labels[:, :10] = -100
    want = []
    for b in range(2):
        lp = torch.log_softmax(logits[b, :-1].double(), dim=-1)
        tgt = labels[b, 1:]
        keep = tgt != -100
        want.append(-lp[keep, tgt[keep]].mean())
    got = per_example_loss(logits, labels)
    torch.testing.assert_close(got.double(), torch.stack(want), rtol=0, atol=2e-5)


def test_lora_inputs_that_require_gradients_are_refused_not_miscomputed():
    """The engine asks the backward pass only for probes on LoRA modules fed by frozen layers; when the inputs
    themselves require gradients (enable_input_require_grads), no module qualifies: a clear error, not rows of
    uninitialised memory."""
    model = attach_lora(_llama(), LoraSettings(r=4))
    model.enable_input_require_grads()
    ids, labels = _batch(97, [6, 7])
    with pytest.raises(GradientError, match="frozen layers"):
        GradientEngine(model, 0).flat_grads(ids, labels)


def test_a_lora_module_called_twice_gets_both_calls_gradient(monkeypatch):
    """Weight sharing: a model that runs one LoRA-wrapped layer twice per forward. Its per-example gradient is the sum
    over both calls (what plain autograd gives), on the flat and on both projection paths."""
    from gist_core.grads import per_example

    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 16)
            self.mix = torch.nn.Linear(16, 16, bias=False)
            self.head = torch.nn.Linear(16, 50, bias=False)
            self.config = SimpleNamespace(vocab_size=50)

        def forward(self, input_ids, attention_mask=None):
            h = self.emb(input_ids)
            h = torch.tanh(self.mix(h))
            h = torch.tanh(self.mix(h))  # the same module again
            return type("Out", (), {"logits": self.head(h)})()

    from peft import LoraConfig, get_peft_model
    torch.manual_seed(0)
    model = get_peft_model(Twice(), LoraConfig(r=2, target_modules=["mix"], lora_alpha=4))
    _perturb_lora_b(model, seed=4)
    ids, labels = _batch(50, [5, 8, 6])
    engine = GradientEngine(model, 0)
    engine.trim_logits = False
    naive = loop_grads(model, ids, labels, 0)
    flat, _ = engine.flat_grads(ids, labels)
    torch.testing.assert_close(flat, naive, rtol=1e-4, atol=1e-6)
    basis = torch.linalg.qr(torch.randn(engine.dim, 3, generator=torch.Generator().manual_seed(2)))[0]
    for budget in (per_example.FLAT_BUDGET_BYTES, 0):  # joined (B, D), then module by module
        monkeypatch.setattr(per_example, "FLAT_BUDGET_BYTES", budget)
        proj, _ = engine.projected_grads(ids, labels, basis)
        torch.testing.assert_close(proj, naive @ basis, rtol=1e-4, atol=1e-6)
