"""Curvature of a LoRA block: exact Hessian vs finite differences, Theorem 3.2's cross term on a
synthetic case with a known answer, the Fisher's gradients vs the pipeline's, and the stage end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gist_core.analysis import curvature as curv
from gist_core.analysis import geometry as g


def _block_fn(micro_model_dir, n_coords=40, dtype=torch.float64):
    from gist_core.config import LoraSettings
    from gist_core.data.formatting import encode_pair
    from gist_core.model.load import attach_lora, load_base_model
    model, tok = load_base_model(str(micro_model_dir), device="cpu")
    peft = attach_lora(model, LoraSettings(r=2), seed=0).to(dtype)
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero; give it values so every block of the Hessian is exercised
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    enc = [encode_pair(tok, f"list: a b c{i}", f"c{i} b", 48) for i in range(3)]
    block = g.pick_block(peft, None, n_coords, seed=0)
    return peft, tok, block, g.BlockFunction(peft, block, [e[0] for e in enc], [e[1] for e in enc], tok.pad_token_id)


def test_exact_hessian_equals_finite_differences_of_the_gradient(micro_model_dir):
    _, _, block, fn = _block_fn(micro_model_dir)
    H = g.exact_hessian(fn).numpy()
    assert H.shape == (block.size, block.size)
    grad = torch.func.grad(fn.loss)
    eps = 1e-4
    for j in [0, 5, block.n_a, block.size - 1]:  # A and B coordinates
        e = torch.zeros(block.size, dtype=fn.theta0.dtype)
        e[j] = eps
        fd = ((grad(fn.theta0 + e) - grad(fn.theta0 - e)) / (2 * eps)).numpy()
        np.testing.assert_allclose(H[:, j], fd, atol=2e-3 * np.abs(H).max())


def test_gauss_newton_is_psd_and_the_fisher_uses_the_pipelines_gradients(micro_model_dir):
    from gist_core.grads.per_example import GradientEngine, param_blocks
    peft, tok, block, fn = _block_fn(micro_model_dir, dtype=torch.float32)
    GN = g.gauss_newton(fn).double().numpy()
    assert np.linalg.eigvalsh(GN).min() > -1e-6 * np.abs(GN).max()
    per = g.per_example_gradients(fn).numpy()
    flat, _ = GradientEngine(peft, tok.pad_token_id).flat_grads(fn.input_ids, fn.labels)
    offs = {b.name: b.offset for b in param_blocks(peft)}
    cols = np.concatenate([offs[block.name_a] + block.idx_a, offs[block.name_b] + block.idx_b])
    np.testing.assert_allclose(per, flat.numpy()[:, cols], atol=1e-5)


def test_theorem_3_2_cross_term_exists_for_a_diagonal_weight_space_hessian():
    """L(W) = 0.5 sum h_ij W_ij^2 + sum c_ij W_ij (diagonal weight-space Hessian), W = W0 + B A."""
    rng = np.random.default_rng(0)
    m, n, r = 4, 3, 2
    h, c, W0 = rng.random((m, n)) + 0.5, rng.standard_normal((m, n)), rng.standard_normal((m, n))
    A = rng.standard_normal((r, n))
    for B in (np.zeros((m, r)), rng.standard_normal((m, r))):  # LoRA's init (B = 0), then a trained-like B
        def loss(theta):
            a, b = theta[: r * n].reshape(r, n), theta[r * n:].reshape(m, r)
            W = torch.tensor(W0) + b @ a
            return 0.5 * (torch.tensor(h) * W ** 2).sum() + (torch.tensor(c) * W).sum()
        theta = torch.tensor(np.concatenate([A.ravel(), B.ravel()]))
        H = torch.func.hessian(loss)(theta).numpy()
        gw = h * (W0 + B @ A) + c
        np.testing.assert_allclose(H, curv.bilinear_hessian(h, gw, A, B), atol=1e-10)
        cross = H[: r * n, r * n:]
        assert np.abs(cross).max() > 0.1  # the A-B block is there although d2L/dW2 is diagonal
        if not B.any():  # at LoRA's init: no A-A curvature, and the A-B block is exactly delta_kk' (G_W)_ij
            assert np.abs(H[: r * n, : r * n]).max() == 0
            expect = np.zeros((r * n, m * r))
            for i in range(m):
                for k in range(r):
                    for j in range(n):
                        expect[k * n + j, i * r + k] = gw[i, j]
            np.testing.assert_allclose(cross, expect, atol=1e-12)


def test_numbers_on_known_matrices():
    D = np.diag([1.0, 2.0, 3.0])
    assert curv.offdiag_ratio(D) == 0.0 and curv.diagonal_fit_error(D, np.array([1.0, 2.0, 3.0])) < 1e-12
    M = np.array([[1.0, 1.0], [1.0, 1.0]])
    assert curv.offdiag_ratio(M) == pytest.approx(np.sqrt(2) / 2)
    nums = curv.block_numbers(M, 1)
    assert nums["mass_AB"] == pytest.approx(0.5) and nums["mass_AA"] + nums["mass_AB"] + nums["mass_BB"] == pytest.approx(1)
    U = np.eye(4)[:, :2]
    assert curv.subspace_overlap(U, U) == pytest.approx(1.0) and curv.subspace_overlap(U, np.eye(4)[:, 2:]) == 0.0


def test_geometry_stage_end_to_end(micro_model_dir, micro_corpus, tmp_path):
    from gist_core.cli import main
    from gist_core.config import GeometryConfig, RunConfig, TrainConfig
    from gist_core.runner.geometry import load_matrices, run_geometry
    from gist_core.runner.pipeline import run_select
    from gist_core.store.manifest import read_events
    run = tmp_path / "run"
    run_select(RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                         rank=4, warmup_fraction=0.2, warmup=TrainConfig(epochs=2, batch_size=8)), run, quiet=True)
    rep = run_geometry(run, GeometryConfig(n_coords=48, rank=3), quiet=True)
    on_disk = json.loads((run / "geometry" / "geometry.json").read_text())
    assert set(on_disk["checkpoints"]) == {"1", "2"} and [s["epoch"] for s in rep["spectrum"]] == [1, 2]
    c = on_disk["checkpoints"]["2"]
    for key in ("offdiag_ratio", "mass_AB", "offdiag_ratio_AA"):
        assert 0 <= c["hessian"][key] <= 1
    assert 0 <= c["overlap_fisher_hessian"] <= 1 and c["n_coords"] == 48
    mats = load_matrices(run, 2)
    assert mats["hessian"].shape == (48, 48) and mats["adam_v"].shape == (48,) and (mats["adam_v"] >= 0).all()
    n = len(read_events(run))
    run_geometry(run, GeometryConfig(n_coords=48, rank=3), quiet=True)  # rerun: both checkpoints skipped
    assert {e["status"] for e in read_events(run)[n:] if e["stage"].startswith("geometry")} == {"skip"}
    assert main(["geometry", "--run", str(tmp_path / "nope")]) == 2
