"""Baseline scores against their definitions."""
from __future__ import annotations

import numpy as np
import torch

from gist_core.methods.baselines import scores as baselines


def _unit(M):
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def test_rawcos_columns_are_cosines_with_the_mean_raw_validation_gradient():
    rng = np.random.default_rng(0)
    G, X = rng.standard_normal((6, 30)), rng.standard_normal((50, 30))
    groups = {"a": [0, 1], "b": [2, 3, 4, 5]}
    feats = baselines.rawcos_features(torch.tensor(X), torch.tensor(G)).numpy()
    got = baselines.rawcos_columns(feats, G @ G.T, groups)
    expect = np.stack([_unit(X) @ (G[idx].mean(0) / np.linalg.norm(G[idx].mean(0))) for idx in groups.values()], 1)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_embedding_columns_are_subtask_mean_cosines():
    rng = np.random.default_rng(1)
    E, T = rng.standard_normal((40, 8)), rng.standard_normal((5, 8))
    groups = {"x": [0, 4], "y": [1, 2, 3]}
    got = baselines.embedding_columns(E, T, groups, block_rows=7)
    expect = np.stack([(_unit(E) @ _unit(T[idx]).T).mean(1) for idx in groups.values()], 1)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_mean_pooled_embeddings_ignore_padding(micro_model_dir):
    from gist_core.model.load import load_base_model
    model, tok = load_base_model(str(micro_model_dir), device="cpu")
    ids = [tok("a b c d e f", add_special_tokens=False)["input_ids"], tok("a", add_special_tokens=False)["input_ids"]]
    batches: list[int] = []
    batched = baselines.mean_pooled_embeddings(model, ids * 3, tok.pad_token_id, batch_size=4, on_batch=batches.append)
    assert batches == [4, 2]  # the progress bar hears of every row, once
    alone = np.stack([baselines.mean_pooled_embeddings(model, [x], tok.pad_token_id)[0] for x in ids * 3])
    np.testing.assert_allclose(batched, alone, atol=1e-5)


def test_random_and_oracle_selections():
    a, b = baselines.random_selection(100, 10, 3), baselines.random_selection(100, 10, 3)
    assert np.array_equal(a, b) and len(set(a)) == 10
    assert not np.array_equal(a, baselines.random_selection(100, 10, 4))
    relevant = np.zeros(100, dtype=bool)
    relevant[::7] = True
    picked = baselines.oracle_selection(relevant, 5, 0)
    assert len(picked) == 5 and relevant[picked].all()
    assert len(baselines.oracle_selection(relevant, 50, 0)) == relevant.sum()  # fewer true examples than k


def test_length_scores_prefer_long_responses():
    sc = baselines.length_scores(np.array([3, 10, 1]), {"a": [0], "b": [1]})
    assert sc.columns.shape == (3, 2) and int(np.argmax(sc.score)) == 1


def test_position_weighted_pooling_equals_a_naive_loop():
    """RDS+'s pooling: the last hidden state of the i-th real token weighted by i, one example at a time, no
    padding; batched right-padded rows must give the same vectors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)).eval()
    rows = [[5, 7, 9, 11, 2], [3, 4], [8, 8, 8, 1, 2, 3, 4, 6]]
    got = baselines.mean_pooled_embeddings(model, rows, pad_id=0, batch_size=8, pooling="position")
    plain = baselines.mean_pooled_embeddings(model, rows, pad_id=0, batch_size=8, pooling="mean")
    for i, ids in enumerate(rows):
        with torch.no_grad():
            h = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].double()
        w = torch.arange(1, len(ids) + 1, dtype=torch.float64)
        np.testing.assert_allclose(got[i], ((h * w[:, None]).sum(0) / w.sum()).numpy(), atol=1e-5)
        np.testing.assert_allclose(plain[i], h.mean(0).numpy(), atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3  # the weighting changes the vector
