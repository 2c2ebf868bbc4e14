"""GradientSpace math: the streaming sketch against an exact SVD, assignment determinism, metrics vs naive loops."""
import numpy as np
import pytest
from repo import ROOT

from gist_core.methods.gradientspace import assign, metrics
from gist_core.methods.gradientspace.sketch import FrequentDirections, SketchState, principal_angles


def low_rank(n=300, d=80, r=6, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, r)) * np.linspace(10, 1, r)) @ rng.normal(size=(r, d))


def test_sketch_is_exact_below_its_size():
    G = low_rank()
    fd = FrequentDirections(G.shape[1], ell=12)
    for s in range(0, len(G), 7):  # batches of 7: the buffer fills and shrinks many times
        fd.update(G[s:s + 7])
    V, sig = fd.top(6)
    _, s_exact, vt = np.linalg.svd(G, full_matrices=False)
    assert principal_angles(V, vt[:6]).max() <= 1e-3
    assert np.allclose(sig, s_exact[:6], rtol=1e-8)
    B = fd.sketch()
    assert np.allclose(B.T @ B, G.T @ G, atol=1e-6 * np.abs(G.T @ G).max())


def test_sketch_keeps_the_frequent_directions_bound_on_full_rank_data():
    rng = np.random.default_rng(1)
    G = low_rank(n=400, d=60, r=5, seed=1) + 0.3 * rng.normal(size=(400, 60))
    ell = 10
    fd = FrequentDirections(G.shape[1], ell)
    fd.update(G)
    B = fd.sketch()
    err = G.T @ G - B.T @ B
    assert np.linalg.eigvalsh(err).min() >= -1e-6 * np.abs(G.T @ G).max()  # GᵀG − BᵀB ≽ 0
    s = np.linalg.svd(G, compute_uv=False)
    for k in range(ell):
        assert np.linalg.norm(err, 2) <= (s[k:] ** 2).sum() / (ell - k) * (1 + 1e-9)


def test_sketch_resumes_from_a_saved_state():
    G = low_rank(seed=2)
    batches = [G[s:s + 10] for s in range(0, len(G), 10)]  # the stage feeds the same batches after a resume
    whole = FrequentDirections(G.shape[1], 8)
    for b in batches:
        whole.update(b)
    first = FrequentDirections(G.shape[1], 8)
    for b in batches[:13]:
        first.update(b)
    st = first.state
    again = FrequentDirections(G.shape[1], 8, SketchState(st.buffer.copy(), st.filled, st.rows_seen, st.shrunk))
    for b in batches[13:]:
        again.update(b)
    assert np.array_equal(again.sketch(), whole.sketch())


def test_sketch_rejects_rows_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"rows must be \(n, 5\)"):
        FrequentDirections(5, 2).update(np.zeros((3, 4)))


def planted(n_per=60, k=4, d=10, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    X = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres])
    return X, np.repeat(np.arange(k), n_per)


def test_kmeans_is_deterministic_by_seed_and_finds_planted_clusters():
    X, truth = planted()
    a, b = assign.assign(X, 4, "kmeans", seed=3), assign.assign(X, 4, "kmeans", seed=3)
    assert np.array_equal(a, b)
    assert metrics.agreement(a, [str(t) for t in truth])["ari"] > 0.95


def test_dominant_rule_is_the_naive_argmax():
    rng = np.random.default_rng(4)
    C = rng.normal(size=(50, 6))
    naive = [max(range(3), key=lambda j: abs(C[i, j])) for i in range(50)]
    assert assign.assign(C, 3, "dominant", 0).tolist() == naive
    with pytest.raises(ValueError, match="k ≤ the sketch rank 6"):
        assign.dominant_labels(C, 7)


def test_pick_k_prefers_the_planted_number():
    X, _ = planted(k=5, seed=5)
    k, curve = assign.pick_k(X, [2, 3, 5, 8], "kmeans", seed=0)
    assert k == 5 and [c["k"] for c in curve] == [2, 3, 5, 8]


def test_metrics_equal_naive_loops():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(40, 3))
    labels = rng.integers(0, 3, size=40)
    truth = [str(t) for t in rng.integers(0, 4, size=40)]
    mu = X.mean(0)
    within = sum(sum((X[i] - X[labels == c].mean(0)) @ (X[i] - X[labels == c].mean(0))
                     for i in range(40) if labels[i] == c) for c in range(3))
    assert metrics.within_variance_ratio(X, labels) == pytest.approx(within / sum((x - mu) @ (x - mu) for x in X))
    purity = sum(max(sum(1 for i in range(40) if labels[i] == c and truth[i] == s) for s in set(truth))
                 for c in range(3)) / 40
    assert metrics.agreement(labels, truth)["purity"] == pytest.approx(purity)
    skills, M = metrics.composition(labels, truth)
    assert M.sum() == 40 and M[labels[0], skills.index(truth[0])] >= 1


# ----------------------------------------------------------------------------- the stage, end to end
@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory, micro_model_dir, micro_corpus):
    from gist_core.config import RunConfig
    from gist_core.runner.pipeline import run_select
    out = tmp_path_factory.mktemp("cluster-run")
    cfg = RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                    budget=0.1, rank=4, r_max=8, max_length=64, seed=0, grad_batch_size=8)
    run_select(cfg, out, quiet=True)
    return out


def small_cfg(**kw):
    from gist_core.methods.gradientspace.config import ClusterConfig
    return ClusterConfig(**{**dict(n_clusters=0, k_grid=(2, 4, 6), rank=6, sketch_size=48, pool_size=40,
                                   elrea_dim=16, batch_size=8, seed=0), **kw})


def test_stored_coordinates_equal_a_naive_loop_and_the_basis_an_exact_svd(cluster_run):
    from gist_core.grads.per_example import loop_grads
    from gist_core.methods.gradientspace.cluster_stage import Cluster
    from gist_core.store.layout import RunLayout
    c = Cluster.open(cluster_run, small_cfg(), quiet=True)
    rep = c.execute()
    lay = RunLayout(cluster_run)
    rows = np.load(lay.clusters_array("rows"))
    basis, coords = np.load(lay.clusters_array("basis")), np.load(lay.clusters_array("coords"))
    tok, _ = c.ctx.tokenizer_and_model()
    pt = c.inputs.pool_tok
    G = loop_grads(c.ctx.adapter_model(c.run_cfg.checkpoint), [pt.input_ids[r] for r in rows],
                   [pt.labels[r] for r in rows], tok.pad_token_id).double().numpy()  # one example at a time
    _, s, vt = np.linalg.svd(G, full_matrices=False)  # 40 rows < ℓ = 48: the sketch is exact in theory
    assert principal_angles(basis, vt[:6]).max() <= 1e-3
    np.testing.assert_allclose(coords, G @ basis.T.astype(np.float64), rtol=1e-3, atol=1e-5 * np.abs(coords).max())
    labels = np.load(lay.clusters_array("labels-gradientspace"))
    assert labels.tolist() == assign.assign(coords, rep["k"], "kmeans", 0).tolist()
    assert set(rep["table"]) == {"gradientspace", "elrea", "embedding", "random"}
    assert rep["k"] in (2, 4, 6) and [c["k"] for c in rep["k_curve"]] == [2, 4, 6]


def test_killed_cluster_stage_resumes_to_the_same_labels(cluster_run, tmp_path, monkeypatch):
    import shutil

    from gist_core.methods.gradientspace import cluster_stage as stage
    from gist_core.store.layout import RunLayout
    ref = stage.run_cluster(cluster_run, small_cfg(), quiet=True)
    ref_labels = np.load(RunLayout(cluster_run).clusters_array("labels-gradientspace"))
    run = tmp_path / "run"
    shutil.copytree(cluster_run, run, ignore=shutil.ignore_patterns("clusters"))
    monkeypatch.setattr(stage, "SAVE_EVERY", 1)
    real, calls = FrequentDirections.update, {"n": 0}

    def dying(self, rows):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")  # like a kill between batches of the sketch pass
        return real(self, rows)
    monkeypatch.setattr(FrequentDirections, "update", dying)
    with pytest.raises(KeyboardInterrupt):
        stage.run_cluster(run, small_cfg(), quiet=True)
    assert RunLayout(run).clusters_array("sketch.part").with_suffix(".npz").exists()
    again = stage.run_cluster(run, small_cfg(), quiet=True)
    assert calls["n"] > 3
    assert not list(RunLayout(run).clusters_dir.glob("*.part.npz"))  # resume states go once their array is saved
    assert np.array_equal(np.load(RunLayout(run).clusters_array("labels-gradientspace")), ref_labels)
    assert again["table"] == ref["table"]


def test_clusters_page_renders_the_stored_table_and_composition(cluster_run, monkeypatch):
    import json

    from fake_run import plotly_array
    from streamlit.testing.v1 import AppTest

    from gist_core.methods.gradientspace.cluster_stage import run_cluster
    rep = run_cluster(cluster_run, small_cfg(), quiet=True)
    root = ROOT
    monkeypatch.setenv("GIST_LAB_RUNS", str(cluster_run.parent))
    at = AppTest.from_file(str(root / "app.py"), default_timeout=60)
    at.query_params["run"] = cluster_run.name
    at.run()
    at.switch_page("pages/8_Clusters.py").run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    order = ["gradientspace", "elrea", "embedding", "random"]
    assert table["ARI"].round(6).tolist() == [round(rep["table"][m]["ari"], 6) for m in order]
    assert "reconstruction from the abstract" in " ".join(c.value for c in at.caption)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    heat = next(c for c in charts if c["layout"]["title"]["text"].startswith("Cluster × skill"))["data"][0]
    assert heat["x"] == rep["skills"] and len(heat["y"]) == len(rep["composition"]["gradientspace"])
    at.radio(key="clusters_method").set_value("embedding").run()
    assert not at.exception, at.exception
    members = at.dataframe[1].value
    assert set(members["cluster"]) == {int(at.selectbox(key="clusters_pick").value)}
    scatter = json.loads(at.get("plotly_chart")[-1].proto.spec)  # the Map, coloured by the chosen clustering
    assert scatter["layout"]["title"]["text"].startswith("Pool rows")
    assert len(scatter["data"]) == len(rep["composition"]["embedding"]) and sum(
        len(plotly_array(t["x"])) for t in scatter["data"]) == rep["n_rows"]
    assert any("No experts in this run yet" in i.value for i in at.info)  # no experts yet: the command to make them
    assert any(c.value == f"gist-lab experts --run {cluster_run.resolve()}" for c in at.code)
    assert not at.button(key="launch_experts").disabled
