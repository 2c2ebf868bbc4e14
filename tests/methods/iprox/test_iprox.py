"""Iprox: IPSVD against a direct weighted low-rank solve, exact reproduction at full rank, the factor-space
gradient map against autograd, stage-2 alignment on a micro model, the stored proxy as a model, and
`gist-lab proxy build` end to end with its agreement figures recomputed from the runs' own score files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from repo import ROOT

from gist_core.methods.iprox.ipsvd import estimate_rank, ipsvd_factors, svd_factors, weighted_error

RIDGE = 1e-3


def _sqrtm(C: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(C)
    return (vecs * np.sqrt(vals)) @ vecs.T


def direct_weighted_solve(W, H, D, r, ridge=RIDGE):
    """min over rank-r Ŵ of ||C_d^1/2 (W - Ŵ) C_h^1/2||_F with the covariances formed explicitly (numpy, float64):
    whiten, truncate by Eckart-Young, unwhiten."""
    N = H.shape[1]
    Rh = _sqrtm(H @ H.T / N + ridge * np.eye(H.shape[0]))
    Rd = _sqrtm(D @ D.T / N + ridge * np.eye(D.shape[0]))
    U, S, Vt = np.linalg.svd(Rd @ W @ Rh)
    M_r = (U[:, :r] * S[:r]) @ Vt[:r]
    return np.linalg.solve(Rd, M_r) @ np.linalg.inv(Rh)


def objective(W, W_hat, H, D, ridge=RIDGE):
    N = H.shape[1]
    Rh = _sqrtm(H @ H.T / N + ridge * np.eye(H.shape[0]))
    Rd = _sqrtm(D @ D.T / N + ridge * np.eye(D.shape[0]))
    return np.linalg.norm(Rd @ (W - W_hat) @ Rh)


@pytest.mark.parametrize("m,n,N,r", [(12, 9, 40, 3), (7, 16, 64, 5), (20, 20, 25, 8)])
def test_ipsvd_equals_direct_weighted_solve(m, n, N, r):
    rng = np.random.default_rng(m * n + r)
    W = rng.normal(size=(m, n))
    # anisotropic probes: the weighting must matter, or plain SVD would pass too
    H = (rng.normal(size=(n, N)).T * np.geomspace(3.0, 0.05, n)).T
    D = (rng.normal(size=(m, N)).T * np.geomspace(0.02, 2.0, m)).T
    A, B = ipsvd_factors(*(torch.tensor(x) for x in (W, H, D)), r)
    assert A.shape == (m, r) and B.shape == (r, n)
    W_ipsvd = (A @ B).numpy()
    W_direct = direct_weighted_solve(W, H, D, r)
    assert np.linalg.norm(W_ipsvd - W_direct) / np.linalg.norm(W_direct) <= 1e-5
    As, Bs = svd_factors(torch.tensor(W), r)
    # the weighted objective: IPSVD is the optimum, plain SVD is not
    assert objective(W, W_ipsvd, H, D) < 0.95 * objective(W, (As @ Bs).numpy(), H, D)
    rel = weighted_error(torch.tensor(W), A @ B, torch.tensor(H), torch.tensor(D))
    assert rel == pytest.approx(objective(W, W_ipsvd, H, D) / objective(W, 0 * W, H, D), rel=1e-6)


def test_ipsvd_keeps_dtype_and_contiguity():
    W = torch.randn(6, 10, dtype=torch.float32).T  # a transposed (non-contiguous) view
    A, B = ipsvd_factors(W, torch.randn(6, 30), torch.randn(10, 30), 3)
    assert A.dtype == B.dtype == torch.float32 and A.is_contiguous() and B.is_contiguous()


def test_estimate_rank_rule():
    assert estimate_rank(576, 576, 0.5, 16) == 144            # (1 - 0.5)·576·576/1152 = 144
    assert estimate_rank(576, 576, 0.5, 128) == 256            # rounded up to the reference's multiple
    assert estimate_rank(128, 896, 0.5, 128) is None           # the reference's Qwen k/v case: r = min(dim), dense
    assert estimate_rank(64, 32, 0.1, 16) is None              # factors no smaller than the weight: dense
    assert estimate_rank(1536, 576, 0.7, 16) == 128            # round(0.3·1536·576/2112) = 126 → 128


def test_factor_space_gradient_equals_autograd():
    from gist_core.methods.iprox.align import factor_space
    torch.manual_seed(0)
    A = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randn(11, 5, dtype=torch.float64)
    y = torch.randn(11, 7, dtype=torch.float64)

    def loss(W):
        return ((torch.tanh(x @ W.T) - y) ** 2).sum()

    W = (A @ B).detach().requires_grad_(True)
    (G,) = torch.autograd.grad(loss(W), W)
    gA, gB = torch.autograd.grad(loss(A @ B), (A, B))
    mA, mB = factor_space(G, A.detach(), B.detach())
    assert torch.allclose(mA, gA, atol=1e-12) and torch.allclose(mB, gB, atol=1e-12)


def _load(folder):
    from gist_core.model.load import load_base_model
    model, tok = load_base_model(str(folder), device="cpu")
    return model.eval(), tok


def _probe_sequences(tok, rows, max_length=64):
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    return list(tokenize_examples(load_examples(str(rows)), tok, max_length).input_ids)


def test_full_rank_ipsvd_reproduces_the_target(micro_model_dir, micro_corpus):
    """With probes spanning every layer's input and output space (N ≥ max(m, n)) and rank min(m, n), A·B = W and
    the proxy's logits are the target's."""
    import copy

    from gist_core.methods.iprox.proxy import LayerPlan, collect_probes, compress, factor_layers, target_linears
    target, tok = _load(micro_model_dir)
    seqs = _probe_sequences(tok, micro_corpus["pool"])[:40]
    layers = target_linears(target, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    probes = collect_probes(target, seqs, layers, max_probes=1024, seed=0)
    assert probes.n_columns >= max(max(m.in_features, m.out_features) for m in layers.values())
    proxy = copy.deepcopy(target)
    plan = [LayerPlan(n, m.out_features, m.in_features, min(m.out_features, m.in_features)) for n, m in layers.items()]
    compress(proxy, plan, "ipsvd", probes)
    assert len(factor_layers(proxy)) == len(layers) == 14
    for name, f in factor_layers(proxy).items():
        W = layers[name].weight
        assert torch.linalg.norm(f.A @ f.B - W) / torch.linalg.norm(W) <= 1e-5, name
    ids = torch.tensor([seqs[0]])
    with torch.no_grad():
        assert (proxy(ids).logits - target(ids).logits).abs().max() <= 1e-5


def test_collect_probes_against_a_naive_hook_free_pass(micro_model_dir, micro_corpus):
    """The probe columns equal the layer's input and the loss gradient at its output, computed by hand for one
    sequence (the output of k_proj is a leaf we differentiate directly)."""
    from gist_core.methods.iprox.proxy import collect_probes, target_linears
    target, tok = _load(micro_model_dir)
    seq = _probe_sequences(tok, micro_corpus["pool"])[0]
    name = "model.layers.1.self_attn.k_proj"
    probes = collect_probes(target, [seq], target_linears(target, ["k_proj"]), max_probes=len(seq), seed=0)
    layer = target.get_submodule(name)
    seen = {}
    handle = layer.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach(), out=o))
    out = target(torch.tensor([seq]), labels=torch.tensor([seq]))
    handle.remove()
    (g,) = torch.autograd.grad(out.loss, seen["out"])
    assert torch.allclose(probes.H[name], seen["x"][0].T, atol=1e-6)   # every position, in order
    assert torch.allclose(probes.D[name], g[0].T, atol=1e-7)


def _micro_proxy(micro_model_dir, micro_corpus, init="ipsvd", rho=0.5):
    import copy

    from gist_core.methods.iprox.proxy import collect_probes, compress, plan_ranks, target_linears
    target, tok = _load(micro_model_dir)
    seqs = _probe_sequences(tok, micro_corpus["pool"])
    layers = target_linears(target, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    probes = collect_probes(target, seqs[:16], layers, max_probes=256, seed=0)
    proxy = copy.deepcopy(target)
    plan = plan_ranks(target_linears(proxy, list({n.rsplit('.', 1)[-1] for n in layers})), rho, 4)
    compress(proxy, plan, init, probes)
    return target, proxy, tok, plan


def _batches(tok, micro_corpus, n=16, size=4):
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    from gist_core.grads.per_example import pad_batch
    t = tokenize_examples(load_examples(str(micro_corpus["pool"]))[100:100 + n], tok, 64)
    ids, labs = list(t.input_ids), list(t.labels)
    return [pad_batch(ids[i:i + size], labs[i:i + size], tok.pad_token_id, "cpu") for i in range(0, n, size)]


def test_alignment_loss_is_zero_when_the_proxy_is_the_target(micro_model_dir, micro_corpus):
    """A full-rank IPSVD proxy computes the target's function, so its factor gradients are exactly the target's
    mapped by the chain rule: the alignment term (1 − cos) and the KL anchor vanish on every batch."""
    import copy

    from gist_core.methods.iprox.align import Alignment
    from gist_core.methods.iprox.proxy import LayerPlan, collect_probes, compress, target_linears
    target, tok = _load(micro_model_dir)
    layers = target_linears(target, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    probes = collect_probes(target, _probe_sequences(tok, micro_corpus["pool"])[:40], layers, max_probes=1024, seed=0)
    proxy = copy.deepcopy(target)
    compress(proxy, [LayerPlan(n, m.out_features, m.in_features, min(m.out_features, m.in_features))
                     for n, m in layers.items()], "ipsvd", probes)
    pairing = Alignment.of(target, proxy)
    assert len(pairing.pairs) == 14
    for batch in _batches(tok, micro_corpus, n=8):
        _, parts = pairing.loss(*batch, lambda_kd=0.1)
        assert parts["align"] <= 1e-5 and abs(parts["kd"]) <= 1e-6, parts


def test_alignment_loss_decreases(micro_model_dir, micro_corpus):
    from gist_core.methods.iprox.align import Alignment, align
    target, proxy, tok, _ = _micro_proxy(micro_model_dir, micro_corpus, init="random")
    batches = _batches(tok, micro_corpus)
    pairing = Alignment.of(target, proxy)

    def held_out_align():
        return float(np.mean([pairing.loss(*b)[1]["align"] for b in batches]))

    before = held_out_align()
    steps = align(target, proxy, batches, epochs=6, lr=3e-3, lambda_kd=0.1)
    after = held_out_align()
    assert after < before - 0.05, (before, after)
    first, last = np.mean([s.align for s in steps[:4]]), np.mean([s.align for s in steps[-4:]])
    assert last < first
    assert all(s.kd > 0 for s in steps)  # the anchor was on and measured
    # only the factors moved: the target's weights are untouched by stage 2
    fresh, _ = _load(micro_model_dir)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), target.state_dict().values()))


def test_kd_loss_is_a_temperature_scaled_forward_kl():
    from gist_core.methods.iprox.align import kd_loss
    torch.manual_seed(1)
    t, p = torch.randn(2, 5, 9), torch.randn(2, 5, 9)
    labels = torch.tensor([[-100, -100, 3, 4, 1], [-100, 2, 2, -100, 7]])
    got = kd_loss(t, p, labels, tau=2.0)
    vals = []
    for b in range(2):
        for s in range(4):
            if labels[b, s + 1] != -100:
                pt, pp = torch.softmax(t[b, s] / 2, -1), torch.softmax(p[b, s] / 2, -1)
                vals.append(float((pt * (pt.log() - pp.log())).sum()))
    assert float(got) == pytest.approx(4.0 * np.mean(vals), rel=1e-6)


def test_saved_proxy_loads_as_a_model_and_reproduces_its_logits(micro_model_dir, micro_corpus, tmp_path):
    from gist_core.errors import ModelError
    from gist_core.methods.iprox.proxy import count_params, factor_layers
    from gist_core.methods.iprox.store import save_proxy
    from gist_core.model.registry import resolve
    target, proxy, tok, plan = _micro_proxy(micro_model_dir, micro_corpus)
    assert count_params(proxy) < count_params(target)
    save_proxy(proxy, tok, tmp_path / "proxy", {"key": "k1", "target_folder": str(micro_model_dir), "rho": 0.5})
    loaded, _ = _load(tmp_path / "proxy")
    assert set(factor_layers(loaded)) == set(factor_layers(proxy)) == {p.name for p in plan if p.rank}
    ids = torch.tensor([_probe_sequences(tok, micro_corpus["pool"])[3]])
    with torch.no_grad():
        assert (loaded(ids).logits - proxy(ids).logits).abs().max() <= 1e-6
    assert resolve(str(tmp_path / "proxy")).fingerprint == "proxy:k1"
    # a damaged proxy is a one-line error, not a half-loaded model
    from safetensors.torch import load_file, save_file
    weights = load_file(tmp_path / "proxy" / "model.safetensors")
    weights.pop(next(k for k in weights if k.endswith(".A")))
    save_file(weights, tmp_path / "proxy" / "model.safetensors")
    with pytest.raises(ModelError, match="does not match iprox.json"):
        _load(tmp_path / "proxy")


def test_proxy_takes_lora_and_its_gradients_match_a_loop(micro_model_dir, micro_corpus):
    """peft wraps a factor layer like a Linear; the batched per-example LoRA gradients on the proxy equal a
    one-example-at-a-time autograd loop (the proxy runs on GIST's engine unchanged)."""
    from gist_core.config import LoraSettings
    from gist_core.grads.per_example import GradientEngine, loop_grads
    from gist_core.model.load import attach_lora
    _, proxy, tok, _ = _micro_proxy(micro_model_dir, micro_corpus)
    peft = attach_lora(proxy, LoraSettings(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)  # B = 0 at init would zero every lora_A gradient
    from gist_core.data.examples import load_examples
    from gist_core.data.formatting import tokenize_examples
    t = tokenize_examples(load_examples(str(micro_corpus["pool"]))[:5], tok, 64)
    ids, labs = list(t.input_ids), list(t.labels)
    fast, _ = GradientEngine(peft, tok.pad_token_id).flat_grads(ids, labs)
    slow = loop_grads(peft, ids, labs, tok.pad_token_id)
    assert fast.shape == slow.shape and (fast - slow).abs().max() <= 1e-5


def _naive_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of average ranks, written out (ties share their mean rank)."""
    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(1, len(x) + 1)
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / np.sqrt((ra**2).sum() * (rb**2).sum()))


def _micro_proxy_config(micro_model_dir, micro_corpus, **kw):
    from gist_core.config import LoraSettings
    from gist_core.methods.iprox.config import ProxyConfig
    base = dict(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]), rho=0.5,
                rank_multiple=4, probe_examples=8, max_probes=128, align_examples=8, align_epochs=1, align_batch=4,
                align_lr=1e-3, max_length=64, eval_pool=80, less_dim=64, warmup_epochs=1, candidates=("svd", "layers"),
                sweep=(0.7,), lora=LoraSettings(r=4))
    return ProxyConfig(**{**base, **kw})


def test_proxy_build_end_to_end(micro_model_dir, micro_corpus, tmp_path, monkeypatch):
    """`gist-lab proxy build` on the micro model: every model is built and loadable, the agreement figures equal a
    naive recomputation from the selection runs' own score files, a rerun rebuilds nothing and keeps the measured
    costs, and the Proxy page shows the stored figures."""
    import json

    import pandas as pd

    from gist_core.methods.iprox.artefacts import load_proxy_report
    from gist_core.methods.iprox.proxy import factor_layers
    from gist_core.methods.iprox.stages import run_proxy
    from gist_core.methods.iprox.store import read_plan
    from gist_core.model.load import load_base_model
    from gist_core.model.registry import resolve
    from gist_core.store.layout import ProxyLayout, RunLayout
    cfg = _micro_proxy_config(micro_model_dir, micro_corpus)
    out = tmp_path / "px"
    rep = run_proxy(cfg, out)
    lay = ProxyLayout(out)
    assert load_proxy_report(out)["evaluation"].keys() == {"target", "proxy", "svd", "layers", "rho-0.7"}
    assert rep["models"]["rho-0.7"]["params"] < rep["models"]["proxy"]["params"] < rep["target_params"]
    assert rep["models"]["layers"]["kept_layers"] == [0]  # round(0.5 · 2) of 2 layers: the first of each bucket
    assert read_plan(lay.model)["aligned"] and len(rep["models"]["proxy"]["align_curve"]) == 2  # 8 rows / batch 4
    scores = {n: pd.read_parquet(RunLayout(lay.evaluation(n)).compare_scores) for n in rep["evaluation"]}
    k = rep["k_top"]
    assert k == 4  # 5 % of the 80 scored rows
    for name in ("proxy", "svd", "layers", "rho-0.7"):
        for m in ("gist", "less"):
            a, b = scores["target"][f"score:{m}"].to_numpy(), scores[name][f"score:{m}"].to_numpy()
            assert (scores["target"]["id"] == scores[name]["id"]).all()
            got = rep["evaluation"][name]["agreement"][m]
            assert got["spearman"] == pytest.approx(_naive_spearman(a, b), abs=1e-9)
            top_a = set(scores["target"]["id"][np.argsort(-a, kind="stable")[:k]])
            top_b = set(scores[name]["id"][np.argsort(-b, kind="stable")[:k]])
            assert got["top_overlap"] == pytest.approx(len(top_a & top_b) / k)
    # the layer-extraction baseline read back from disk: the target's layer 0 and everything around the stack
    target, _ = load_base_model(str(micro_model_dir), device="cpu")
    layers_model, _ = load_base_model(str(lay.candidate("layers")), device="cpu")
    assert layers_model.config.num_hidden_layers == 1
    kept = layers_model.state_dict()
    assert set(kept) == {k for k in target.state_dict() if not k.startswith("model.layers.1.")}
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in kept.items())
    model, _ = load_base_model(str(out))  # a build folder is a --model: its proxy
    assert set(factor_layers(model)) == {p["name"] for p in rep["models"]["proxy"]["plan"] if p["rank"]}
    assert resolve(str(out)).fingerprint == f"proxy:{read_plan(lay.model)['key']}"
    # a rerun through the CLI rebuilds nothing and keeps the costs measured when the runs did compute
    stamps = {p: p.stat().st_mtime_ns for p in (lay.model / "iprox.json", lay.candidate("svd") / "iprox.json")}
    argv = ["proxy", "build", "--out", str(out), "--model", str(micro_model_dir), "--train", str(micro_corpus["pool"]),
            "--target", str(micro_corpus["val"]), "--rank-multiple", "4", "--probe-examples", "8", "--max-probes", "128",
            "--align-examples", "8", "--align-epochs", "1", "--align-lr", "1e-3", "--max-length", "64",
            "--eval-pool", "80", "--less-dim", "64", "--warmup-epochs", "1", "--candidates", "svd,layers",
            "--sweep", "0.7", "--lora-r", "4", "--quiet"]
    from gist_core.cli import build_parser
    from gist_core.methods.iprox.config import proxy_config
    assert proxy_config(build_parser().parse_args(argv)) == cfg  # the flags map onto the same config
    from gist_core.cli import main
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    again = load_proxy_report(out)
    for name, ev in rep["evaluation"].items():
        assert again["evaluation"][name]["wall_s"] == pytest.approx(ev["wall_s"])
        assert again["evaluation"][name].get("agreement") == json.loads(json.dumps(ev.get("agreement")))

    from streamlit.testing.v1 import AppTest
    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path))
    at = AppTest.from_file(str(ROOT / "pages" / "10_Proxy.py"), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["model"].tolist() == ["target", "proxy", "svd", "layers", "rho-0.7"]
    assert table["gist Spearman"].round(9).tolist()[1:] == [
        round(again["evaluation"][n]["agreement"]["gist"]["spearman"], 9) for n in ("proxy", "svd", "layers", "rho-0.7")]
    from fake_run import plotly_array
    charts = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec) for c in at.get("plotly_chart")}
    sweep = charts["ρ sweep: IPSVD + alignment proxies"]["data"][0]
    assert plotly_array(sweep["x"]).tolist() == [0.0, 0.5, 0.7]  # the target, the proxy, the sweep point
    heat = next(c for t, c in charts.items() if "rank kept per layer" in t)["data"][0]
    plan = {(p["name"].split(".")[2], p["name"].rsplit(".", 1)[-1]): p for p in again["models"]["proxy"]["plan"]}
    assert len(plan) == 14 and heat["y"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    shown = plotly_array(heat["text"])
    for i, kind in enumerate(heat["y"]):
        for j, layer in enumerate(heat["x"]):
            p = plan[(layer, kind)]
            assert shown[i, j] == (p["rank"] or min(p["out_features"], p["in_features"]))
    at.selectbox(key="proxy_model").set_value("rho-0.7").run()
    assert not at.exception, at.exception


def test_proxy_downstream_trains_the_target_on_the_proxy_selection(micro_model_dir, micro_corpus, tmp_path):
    """--downstream: every model's selection is used to fine-tune the *target* (the point of a proxy), and the
    reported test loss is that compare run's own."""
    import json

    from gist_core.methods.iprox.stages import run_proxy
    from gist_core.store.layout import ProxyLayout, RunLayout
    cfg = _micro_proxy_config(micro_model_dir, micro_corpus, candidates=("layers",), sweep=(), eval_pool=40,
                              downstream=True, n_em=1)
    rep = run_proxy(cfg, tmp_path / "px")
    lay = ProxyLayout(tmp_path / "px")
    for name in ("target", "proxy", "layers"):
        cmp = json.loads(RunLayout(lay.evaluation(name)).compare_report.read_text())
        assert cmp["train_recipe"]["trained_model"] == str(micro_model_dir)
        assert cmp["train_recipe"]["seeds"] == [0, 1, 2]
        for m in ("gist", "less"):
            assert rep["evaluation"][name]["methods"][m]["test_loss"] == pytest.approx(cmp["methods"][m]["test_loss"])
