"""Model loading, LoRA wiring and the warm-up checkpoints."""
from __future__ import annotations

import json

import pytest
import torch

from gist_core.config import LoraSettings
from gist_core.errors import ModelError
from gist_core.model.load import attach_lora, load_base_model, lora_parameters, lora_targets


def test_load_local_model_and_wire_lora(micro_model_dir):
    model, tok = load_base_model(str(micro_model_dir))
    assert tok.pad_token_id is not None
    assert lora_targets(model, LoraSettings()) == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"]
    peft_model = attach_lora(model, LoraSettings(r=4, alpha=8))
    names = [n for n, _ in lora_parameters(peft_model)]
    assert names and all("lora_A" in n or "lora_B" in n for n in names)
    assert len(names) == 2 * 7 * 2  # A and B, 7 projections, 2 layers


def test_custom_target_modules_and_missing_modules(micro_model_dir):
    model, _ = load_base_model(str(micro_model_dir))
    peft_model = attach_lora(model, LoraSettings(r=2, target_modules=("q_proj",)))
    assert {n.split(".")[-4] for n, _ in lora_parameters(peft_model)} == {"q_proj"}
    model, _ = load_base_model(str(micro_model_dir))
    with pytest.raises(ModelError, match="LoRA"):
        attach_lora(model, LoraSettings(target_modules=("no_such_module",)))


def test_missing_model_folder_is_one_line_error(tmp_path):
    with pytest.raises(ModelError, match="model folder or .gguf file not found"):
        load_base_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="unknown dtype"):
        load_base_model(str(tmp_path), dtype="float8")


def test_lora_settings_validation():
    with pytest.raises(ValueError):
        LoraSettings(r=0)
    with pytest.raises(ValueError):
        LoraSettings(dropout=1.0)


def test_warmup_checkpoints_hold_adapter_moments_and_mean_lr(tmp_path, micro_model_dir):
    from gist_core.config import TrainConfig
    from gist_core.model.training import checkpoint_exists, load_checkpoint_meta, load_moments, train_lora
    model, tok = load_base_model(str(micro_model_dir))
    peft_model = attach_lora(model, LoraSettings(r=2))
    ids = [tok("a b c d e f g", add_special_tokens=False)["input_ids"]] * 12
    labels = [[-100] * 3 + x[3:] for x in ids]
    cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=4, warmup_ratio=0.0)
    result = train_lora(peft_model, ids, labels, tok.pad_token_id, cfg, ckpt_dir=tmp_path)
    assert result["steps"] == 6
    for epoch in (1, 2):
        d = tmp_path / f"ckpt-{epoch}"
        assert checkpoint_exists(d) and (d / "adapter_model.safetensors").exists()
        meta = load_checkpoint_meta(d)
        assert meta["epoch"] == epoch and meta["n_steps"] == 3
        moments = load_moments(d)
        names = [n for n, _ in lora_parameters(peft_model)]
        assert set(moments) == {f"{n}.{m}" for n in names for m in ("exp_avg", "exp_avg_sq")}
        assert all(torch.isfinite(v).all() for v in moments.values())
    # linear decay from 1e-2: epoch 1's mean LR is above epoch 2's
    m1, m2 = (json.loads((tmp_path / f"ckpt-{e}" / "meta.json").read_text())["mean_lr"] for e in (1, 2))
    assert 0 < m2 < m1 < 1e-2


def test_an_unlisted_architecture_with_last_layers_wraps_what_all_linear_wraps():
    """peft refuses "all-linear" with layers_to_transform: for a model type without a default list, --lora-layers
    names the Linear modules instead, and the last layer must get exactly the modules "all-linear" gives it."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8)
    assert cfg.model_type not in ("llama", "qwen2")  # not in DEFAULT_TARGETS: the fallback path

    def wrapped(last_layers):
        torch.manual_seed(0)
        peft_model = attach_lora(Qwen3ForCausalLM(cfg), LoraSettings(r=2, last_layers=last_layers))
        return {n.split(".lora_")[0].split("layers.")[1] for n, _ in lora_parameters(peft_model)}

    every = wrapped(None)
    last = wrapped(1)
    assert every and last == {n for n in every if n.startswith("2.")}
    assert {n.split(".")[-1] for n in last} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                 "down_proj"}


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_the_chunked_warmup_loss_trains_exactly_as_the_models_own_loss(micro_model_dir, grad_accum, monkeypatch):
    """The warm-up's chunked loss (no full-vocabulary logits) must be the model's own loss: the same loss every step
    and the same adapter at the end, with prompts of different lengths, chunks smaller than a batch's labelled
    tokens, and gradient accumulation (the Trainer's num_items_in_batch path)."""
    from gist_core.config import TrainConfig
    from gist_core.model import training
    monkeypatch.setattr(training, "LOSS_CHUNK_TOKENS", 5)
    monkeypatch.setattr(training.chunked_causal_lm_loss, "__defaults__", (None, 5))
    rows = ["a b c d e f g h", "a b", "c d e f g h i j k l", "b c d", "e f g h i", "a c e g i k"] * 2
    runs = {}
    for chunked in (False, True):
        model, tok = load_base_model(str(micro_model_dir))
        peft_model = attach_lora(model, LoraSettings(r=2), seed=0)
        ids = [tok(r, add_special_tokens=False)["input_ids"] for r in rows]
        labels = [[-100] * (len(x) // 2 + k % 3) + x[len(x) // 2 + k % 3:] for k, x in enumerate(ids)]
        losses = []
        cfg = TrainConfig(epochs=2, lr=1e-2, batch_size=3, grad_accum=grad_accum, warmup_ratio=0.0)
        training.train_lora(peft_model, ids, labels, tok.pad_token_id, cfg,
                            on_step=lambda s, n, loss, kept=losses: kept.append(loss), chunked_loss=chunked)
        runs[chunked] = (losses, {n: p.detach().clone() for n, p in lora_parameters(peft_model)})
    (own_losses, own_w), (chunk_losses, chunk_w) = runs[False], runs[True]
    assert len(own_losses) == len(chunk_losses) > 0
    assert own_losses == pytest.approx(chunk_losses, rel=1e-5)
    assert max(float((own_w[n] - chunk_w[n]).abs().max()) for n in own_w) < 1e-5
    assert any(float(w.abs().max()) > 0 for n, w in chunk_w.items() if "lora_B" in n)  # it did train


def test_the_chunked_loss_equals_the_models_own_and_a_batch_without_labels_is_zero(micro_model_dir):
    from gist_core.grads.per_example import pad_batch
    from gist_core.model.training import chunked_causal_lm_loss
    model, tok = load_base_model(str(micro_model_dir))
    ids = [tok(r, add_special_tokens=False)["input_ids"] for r in ("a b c d e f", "c d e f g h i j")]
    labels = [[-100] * 3 + ids[0][3:], [-100] * 5 + ids[1][5:]]
    i, lab, att = pad_batch(ids, labels, tok.pad_token_id, "cpu")
    own = model(input_ids=i, attention_mask=att, labels=lab).loss
    assert float(chunked_causal_lm_loss(model, i, att, lab, chunk=2)) == pytest.approx(float(own), rel=1e-6)
    empty = chunked_causal_lm_loss(model, i, att, torch.full_like(lab, -100))
    assert float(empty) == 0.0 and empty.requires_grad
