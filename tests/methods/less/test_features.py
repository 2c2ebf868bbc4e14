"""LESS featuriser: Adam direction, Rademacher projection, scores, and reading optimizer state
from our checkpoints and from real Hugging Face Trainer checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gist_core.errors import MomentsError
from gist_core.methods.less.features import (
    BLOCK_ROWS,
    RademacherProjector,
    adam_direction,
    canonical_name,
    checkpoint_mean_lr,
    less_columns,
    lr_weights,
    read_moments,
)


def test_adam_direction_is_one_simulated_step_without_bias_correction():
    rng = np.random.default_rng(0)
    g, m, v = rng.standard_normal((3, 50)), rng.standard_normal(50), rng.random(50)
    expect = (0.9 * m + 0.1 * g) / np.sqrt(0.999 * v + 0.001 * g ** 2 + 1e-8)
    got = adam_direction(torch.tensor(g), torch.tensor(m), torch.tensor(v)).numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-12)


def test_projector_is_seeded_signs_and_independent_of_caching():
    dim = BLOCK_ROWS + 300  # two blocks, the second partial
    X = torch.randn(5, dim, generator=torch.Generator().manual_seed(1))
    cached = RademacherProjector(dim, 32, seed=0)
    streamed = RademacherProjector(dim, 32, seed=0, cache_bytes=0)
    R = cached.matrix()
    assert R.shape == (dim, 32) and set(R.unique().tolist()) == {-1.0, 1.0}
    np.testing.assert_allclose(cached.project(X), X @ R / 32 ** 0.5, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cached.project(X), streamed.project(X), rtol=0, atol=0)
    assert not streamed._blocks  # nothing kept when it does not fit
    assert not torch.equal(R, RademacherProjector(dim, 32, seed=1).matrix())


def test_projection_preserves_inner_products_approximately():
    X = torch.randn(20, 3000, generator=torch.Generator().manual_seed(2))
    P = RademacherProjector(3000, 2048, seed=0).project(X)
    ratio = P.norm(dim=1) / X.norm(dim=1)
    assert float((ratio - 1).abs().max()) < 0.15


def test_less_columns_equal_the_definition():
    rng = np.random.default_rng(3)
    train = [rng.standard_normal((40, 16)) for _ in range(3)]
    val = [rng.standard_normal((6, 16)) for _ in range(3)]
    groups = {"a": [0, 1, 2], "b": [3, 4, 5]}
    w = [3.0, 2.0, 1.0]
    got = less_columns(train, val, w, groups, block_rows=7)
    unit = lambda M: M / np.linalg.norm(M, axis=1, keepdims=True)  # noqa: E731
    expect = np.zeros((40, 2))
    for Xi, Vi, wi in zip(train, val, np.array(w) / 6):
        for t, idx in enumerate(groups.values()):
            expect[:, t] += wi * (unit(Xi) @ unit(Vi[idx]).T).mean(1)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_lr_weights_fall_back_to_equal_when_a_learning_rate_is_unknown():
    assert lr_weights([3.0, 1.0])[0] == [0.75, 0.25]
    w, why = lr_weights([3.0, None])
    assert w == [0.5, 0.5] and "equal" in why


def test_canonical_name_strips_peft_wrappers():
    assert canonical_name("base_model.model.model.layers.0.q_proj.lora_A.default.weight") == \
        "model.layers.0.q_proj.lora_A.weight"
    assert canonical_name("model.layers.0.q_proj.lora_B.weight") == "model.layers.0.q_proj.lora_B.weight"


# ----------------------------------------------------------------------------- real checkpoints
def _peft(micro_model_dir):
    from gist_core.config import LoraSettings
    from gist_core.model.load import attach_lora, load_base_model
    model, tok = load_base_model(str(micro_model_dir), device="cpu")
    return attach_lora(model, LoraSettings(r=2), seed=0), tok


def _rows(tok, n=24):
    from gist_core.data.formatting import encode_pair
    enc = [encode_pair(tok, f"say word {i}", f"w{i} w{i}", 64) for i in range(n)]
    return [e[0] for e in enc], [e[1] for e in enc]


def _live_moments(peft, optimizer):
    state = getattr(optimizer, "optimizer", optimizer).state
    names = [n for n, p in peft.named_parameters() if p.requires_grad]
    params = [p for n, p in peft.named_parameters() if p.requires_grad]
    m = torch.cat([state[p]["exp_avg"].reshape(-1) for p in params])
    v = torch.cat([state[p]["exp_avg_sq"].reshape(-1) for p in params])
    return names, [p.numel() for p in params], m, v


def test_reads_our_checkpoint_moments(micro_model_dir, tmp_path):
    from gist_core.config import TrainConfig
    from gist_core.model.training import train_lora
    peft, tok = _peft(micro_model_dir)
    ids, labels = _rows(tok)
    train_lora(peft, ids, labels, tok.pad_token_id, TrainConfig(epochs=1, batch_size=8), ckpt_dir=tmp_path)
    names = [n for n, p in peft.named_parameters() if p.requires_grad]
    sizes = [p.numel() for n, p in peft.named_parameters() if p.requires_grad]
    mom = read_moments(tmp_path / "ckpt-1", names, sizes)
    assert mom.m.shape == (sum(sizes),) and "by name" in mom.source
    assert float(mom.v.min()) >= 0 and float(mom.m.abs().max()) > 0
    assert checkpoint_mean_lr(tmp_path / "ckpt-1") > 0


def test_reads_a_hugging_face_trainer_checkpoint_by_index(micro_model_dir, tmp_path):
    """A real Trainer run with save_strategy='epoch': optimizer.pt is index-keyed, trainer_state has the LR log."""
    from transformers import Trainer, TrainingArguments

    from gist_core.model.training import TokenRows, pad_collator
    peft, tok = _peft(micro_model_dir)
    ids, labels = _rows(tok)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, learning_rate=1e-3,
                             per_device_train_batch_size=8, save_strategy="epoch", report_to="none", logging_steps=1,
                             use_cpu=True, disable_tqdm=True, remove_unused_columns=False, seed=0)
    trainer = Trainer(model=peft, args=args, train_dataset=TokenRows(ids, labels), data_collator=pad_collator(tok.pad_token_id))
    trainer.train()
    ckpt = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]
    assert (ckpt / "optimizer.pt").exists() and (ckpt / "adapter_model.safetensors").exists()
    names, sizes, m, v = _live_moments(peft, trainer.optimizer)
    mom = read_moments(ckpt, names, sizes)
    assert "by index" in mom.source
    torch.testing.assert_close(mom.m, m.float())
    torch.testing.assert_close(mom.v, v.float())
    lr = checkpoint_mean_lr(ckpt)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    logged = [h["learning_rate"] for h in state["log_history"] if "learning_rate" in h and 1 < h["epoch"] <= 2]
    assert lr == pytest.approx(np.mean(logged))

    # the same moments keyed by (PEFT-prefixed) names in a .bin file
    named = tmp_path / "named"
    named.mkdir()
    state_by_name, offset = {}, 0
    for n, size in zip(names, sizes):
        state_by_name[n] = {"exp_avg": m[offset:offset + size].clone(), "exp_avg_sq": v[offset:offset + size].clone(),
                            "step": torch.tensor(3.0)}
        offset += size
    torch.save({"state": state_by_name, "param_groups": []}, named / "optimizer.bin")
    mom2 = read_moments(named, names, sizes)
    assert "by name" in mom2.source
    torch.testing.assert_close(mom2.m, m.float())

    # a checkpoint of another LoRA configuration is refused with the reason
    with pytest.raises(MomentsError, match="trainable"):
        read_moments(ckpt, names[:-2], sizes[:-2])


def test_missing_or_foreign_optimizer_state_is_a_clear_error(tmp_path):
    with pytest.raises(MomentsError, match="no optimizer state"):
        read_moments(tmp_path, ["a"], [1])
    torch.save({"state": {0: {"momentum_buffer": torch.zeros(1)}}, "param_groups": [{"params": [0]}]},
               tmp_path / "optimizer.pt")
    with pytest.raises(MomentsError, match="not Adam"):
        read_moments(tmp_path, ["a"], [1])
    (tmp_path / "optimizer.pt").write_bytes(b"not a pickle")
    with pytest.raises(MomentsError, match="cannot read"):
        read_moments(tmp_path, ["a"], [1])
