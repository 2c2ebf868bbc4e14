"""The dashboard pages under streamlit.testing.v1.AppTest on a synthetic run (no browser, no torch)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fake_run import COMPARE_ROWS, make_fake_compare, make_fake_geometry, make_fake_run, plotly_array  # noqa: E402
from repo import ROOT
from streamlit.testing.v1 import AppTest  # noqa: E402

from gist_core.methods import registry
from gist_core.runner import launcher
from gist_core.viewer import breakdowns, pool_map, rescore, rundir, spectrum

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the tomli backport (below), else the test skips
    tomllib = None

PAGES = ["pages/1_Run.py", "pages/2_Spectrum.py", "pages/3_Scores.py", "pages/4_Examples.py", "pages/5_Map.py",
         "pages/6_Curvature.py", "pages/7_Compare.py", "pages/12_Curate.py"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app-runs")
    make_fake_run(root / "fake", n_pool=800, n_val=12, r=6)
    (root / "pending").mkdir()  # a run with a config but no scores yet
    (root / "pending" / "config.json").write_text((root / "fake" / "config.json").read_text())
    make_fake_compare(root / "fake")
    make_fake_geometry(root / "fake")  # P = 64: 32 A + 32 B coordinates, epochs 1 and 2
    make_fake_compare(make_fake_run(root / "nodown", n_pool=300, n_val=8, r=4), with_downstream=False)
    partial = make_fake_compare(make_fake_run(root / "partial", n_pool=300, n_val=8, r=4))
    rep = json.loads((partial / "compare.json").read_text())  # as compare leaves it mid-downstream
    for row in COMPARE_ROWS[4:]:
        for key in ("test_loss", "test_loss_std", "exact_match", "exact_match_std", "per_seed", "per_subtask"):
            rep["methods"][row].pop(key)
    (partial / "compare.json").write_text(json.dumps(rep))
    return root


@pytest.fixture
def open_page(runs_dir, monkeypatch):
    monkeypatch.setenv("GIST_LAB_RUNS", str(runs_dir))

    def _open(page: str | None = None, run: str = "fake") -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.query_params["run"] = run
        at.run()
        assert not at.exception, at.exception
        if page:
            at.switch_page(page).run()
            assert not at.exception, at.exception
        return at
    return _open


def _metric(at: AppTest, label_start: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(label_start))


_array = plotly_array


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_home_lists_runs_and_offers_the_demo(open_page):
    at = open_page()
    table = at.dataframe[0].value
    assert {"fake", "pending"} <= set(table["run"]) and {"status", "model", "data", "budget", "rank", "precision"} <= set(table)
    assert "done" in table.set_index("run").loc["fake", "status"]
    assert any("Launch the bundled demo" in b.label for b in at.button)
    assert "Coming next" not in _captions(at)  # Curvature and Compare are pages now
    links = [p.proto.label for p in at.get("page_link")]
    for page in registry.pages():  # the home page names and links every page, with its line from the registry
        assert page.about and f"{page.title}: {page.about}" in links, page.key


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(open_page, page):
    at = open_page(page)
    assert at.sidebar.selectbox[0].value == "fake"  # the run picker followed ?run=
    assert at.query_params.get("run") == "fake"


@pytest.mark.parametrize("page", [*PAGES[1:5], "pages/12_Curate.py"])
def test_pages_without_scores_point_to_the_run_page(open_page, page):
    at = open_page(page, run="pending")
    assert any("no scores yet" in i.value for i in at.info)


@pytest.mark.parametrize("page, says", [("pages/8_Clusters.py", "No clustering in this run yet"),
                                         ("pages/9_Layers.py", "No `gist-lab train` folder"),
                                         ("pages/10_Proxy.py", "No `gist-lab proxy build` folder")])
def test_method_pages_say_which_command_fills_them(open_page, page, says):
    """Through ui.folder_view (the method pages' cached loader): a folder without the method's report is an empty
    state naming the command, not an error. Their filled states: tests/methods/{gradientspace,gast,iprox}."""
    at = open_page(page)
    assert any(says in i.value for i in at.info), [i.value for i in at.info]


def test_run_page_shows_stages_and_form(open_page):
    at = open_page("pages/1_Run.py")
    assert any("fake" in m.value and "done" in m.value for m in at.markdown)
    assert len(at.get("progress")) == 6  # data, warmup, 2 x val_grads, train_proj, scores
    assert any(b.label.startswith("Quick demo") for b in at.button)
    assert _metric(at, "precision")


def test_spectrum_page_shows_intrinsic_dimension_over_training(open_page):
    at = open_page("pages/2_Spectrum.py")
    assert "Intrinsic dimension over training" in [h.value for h in at.subheader]
    charts = {c.key: c for c in at.get("plotly_chart")}
    assert list(charts) == ["sigma_chart", "explained_chart", "advisor_chart", "intrinsic_dim_chart"]
    spec = json.loads(charts["intrinsic_dim_chart"].proto.spec)
    assert [t["name"] for t in spec["data"]] == ["r95", "r99"] and _array(spec["data"][0]["x"]).tolist() == [1, 2]


def test_spectrum_page_shows_the_rank_advisor_curve(open_page, runs_dir):
    at = open_page("pages/2_Spectrum.py")
    adv = spectrum.advisor_curve(runs_dir / "fake")
    spec = json.loads({c.key: c for c in at.get("plotly_chart")}["advisor_chart"].proto.spec)
    line = next(t for t in spec["data"] if t["name"] == "held-out percentile")
    np.testing.assert_allclose(_array(line["y"]), adv.curve)
    assert any(f"Suggested r = {adv.suggested}" in m.value for m in at.markdown)


def test_rank_slider_rescores_and_is_shared_with_scores(open_page):
    at = open_page("pages/2_Spectrum.py")
    slider = at.slider(key="rank_spectrum")
    top_before = at.dataframe[-1].value["id"].tolist()
    start = slider.value
    new = 1 if start != 1 else 6
    slider.set_value(new).run()
    assert not at.exception
    assert at.slider(key="rank_spectrum").value == new
    assert at.dataframe[-1].value["id"].tolist() != top_before
    assert any(m.label == f"precision at r = {new}" for m in at.metric)
    assert _metric(at, "re-score time").endswith("ms")
    at.switch_page("pages/3_Scores.py").run()
    assert not at.exception and f"rank r = {new} ·" in _captions(at)
    at.switch_page("pages/2_Spectrum.py").run()
    assert at.slider(key="rank_spectrum").value == new  # kept across pages


def test_budget_slider_changes_selection_count(open_page):
    at = open_page("pages/3_Scores.py")
    assert _metric(at, "selected") == "40"  # 5 % of 800
    at.slider(key="budget_scores").set_value(20.0).run()
    assert not at.exception and _metric(at, "selected") == "160"
    at.radio(key="balance_scores").set_value("subtask").run()
    assert not at.exception and "rule: subtask" in _captions(at)
    at.switch_page("pages/4_Examples.py").run()  # the Examples table follows the new budget
    assert not at.exception and "budget 20.0% = 160 examples" in _captions(at)
    assert len(at.dataframe[0].value) == 160  # the table shows the selection at this budget


def test_scores_page_shows_columns_and_who_the_rule_selects(open_page, runs_dir):
    at = open_page("pages/3_Scores.py")
    assert "Per-subtask columns: one scale or many?" in [h.value for h in at.subheader]
    charts = {c.key: c for c in at.get("plotly_chart")}
    assert {"col_violin", "winners_by_rank"} <= set(charts)
    at.radio(key="balance_scores").set_value("quantile").run()
    assert not at.exception and "rule: quantile" in _captions(at)
    rs = rescore.rescored_frame(runs_dir / "fake", at.session_state["rank_scores"] if "rank_scores" in at.session_state
                              else rescore.default_settings(rundir.load_run(runs_dir / "fake"))["rank"], "quantile", 0.05)
    want = breakdowns.max_winners(rs, "quantile", "skill")
    shown = next(d.value for d in at.dataframe if "picked for" in d.value)
    assert shown["selected"].tolist() == want["selected"].tolist()
    at.radio(key="col_scale").set_value("quantile").run()
    assert not at.exception
    assert at.selectbox(key="col_source").options[1:] == ["LESS", "raw-gradient cosine"]  # from compare's columns
    at.selectbox(key="col_source").set_value("LESS").run()
    assert not at.exception and any("from LESS's columns" in m.value for m in at.markdown)
    spec = json.loads({c.key: c for c in at.get("plotly_chart")}["col_violin"].proto.spec)
    assert max(_array(t["y"]).max() for t in spec["data"]) == pytest.approx(1.0)


def test_examples_filters_and_drilldown(open_page):
    at = open_page("pages/4_Examples.py")
    assert len(at.dataframe[0].value) == 40 and at.dataframe[0].value["selected"].all()
    at.radio(key="ex_which").set_value("all").run()
    assert len(at.dataframe[0].value) == 800
    at.multiselect(key="ex_kinds").set_value(["wrong"]).run()
    assert not at.exception and set(at.dataframe[0].value["kind"]) == {"wrong"}
    assert any("Nearest target examples" in m.value for m in at.markdown)
    assert len(at.dataframe[-1].value) == 5  # nearest targets of the first row
    shown = [c.value for c in at.code]  # the drill-down's model input: the first shown row, tokenized
    row = at.dataframe[0].value.iloc[0]
    assert any(row["prompt"] in c and "### Response:" in c for c in shown), "prompt through the template"
    assert any(c.lstrip().startswith(row["response"]) for c in shown), "response tokens in the loss"


def test_map_pca_and_umap_on_request(open_page):
    at = open_page("pages/5_Map.py")
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="map_color").set_value("truth").run()
    assert not at.exception
    at.radio(key="map_method").set_value("UMAP").run()
    assert not at.exception and any("No UMAP cached" in i.value for i in at.info)
    assert at.button(key="map_compute")


def _map_pool_points(at) -> int:
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return sum(len(plotly_array(t["x"])) for t in spec["data"] if t["name"] != "target examples")


def test_map_draws_a_sample_of_a_pool_over_the_cap_until_draw_all(open_page, monkeypatch):
    monkeypatch.setattr(pool_map, "MAP_MAX_POINTS", 500)  # the fake pool has 800 rows
    at = open_page("pages/5_Map.py")
    assert _map_pool_points(at) == 500 and "500" in at.caption[0].value
    at.checkbox(key="map_draw_all").check().run()
    assert not at.exception and _map_pool_points(at) == 800
    at.radio(key="map_method").set_value("UMAP").run()  # the estimate names the points it will fit
    assert any("at 812 points" in i.value and "should take about" in i.value for i in at.info)
    at.checkbox(key="map_draw_all").uncheck().run()
    assert any("at 512 points" in i.value for i in at.info)


def test_compare_page_shows_table_ratios_and_charts(open_page):
    at = open_page("pages/7_Compare.py")
    assert _metric(at, "compute (wall time) GIST / LESS").endswith("×") and _metric(at, "storage GIST / LESS").endswith("%")
    table = at.dataframe[0].value
    assert table["method"].tolist() == COMPARE_ROWS and {"test_loss", "precision", "wall_s"} <= set(table)
    assert len(at.get("plotly_chart")) == 7  # loss, exact match, precision, cost, overlap, rank correlation, per subtask
    assert "seeds vary LoRA init" in _captions(at) and "3 seed(s)" in _captions(at)
    at.toggle(key="cost_log").set_value(True).run()
    assert not at.exception
    at.radio(key="subtask_metric").set_value("exact_match").run()
    assert not at.exception and len(at.dataframe[-1].value) == 30


def test_compare_page_without_compare_offers_the_command(open_page):
    at = open_page("pages/7_Compare.py", run="pending")
    assert any("gist-lab compare --out" in i.value for i in at.info)
    assert at.button(key="launch_compare")  # not clicked: it would start a real compare


def test_compare_page_says_when_downstream_was_switched_off(open_page, runs_dir):
    path = runs_dir / "nodown" / "compare.json"
    rep = json.loads(path.read_text())
    rep.pop("downstream_note")  # what `compare --no-downstream` writes: no note, config.downstream false
    path.write_text(json.dumps(rep))
    try:
        at = open_page("pages/7_Compare.py", run="nodown")
        assert "Not measured in this run (compare ran with --no-downstream)." in _captions(at)
    finally:
        path.write_text(json.dumps({**rep, "downstream_note": "no test split (pass --test): downstream loss and "
                                                              "exact match not measured"}))


def test_compare_page_without_downstream_or_mid_run(open_page):
    at = open_page("pages/7_Compare.py", run="nodown")
    assert any("no test split" in i.value for i in at.info) and "Not measured" in _captions(at)
    table = at.dataframe[0].value
    assert len(table) == len(COMPARE_ROWS) and "test_loss" not in table and "precision" in table
    at = open_page("pages/7_Compare.py", run="partial")
    assert any("4 of 10 methods" in i.value for i in at.info)
    assert at.dataframe[0].value["test_loss"].notna().sum() == 4


def _geometry(runs_dir: Path, run: str = "fake") -> dict:
    return json.loads((runs_dir / run / "geometry" / "geometry.json").read_text())


def test_curvature_page_shows_heatmap_metrics_and_table(open_page, runs_dir):
    rep = _geometry(runs_dir)
    at = open_page("pages/6_Curvature.py")
    assert at.radio(key="geo_epoch").value == 1  # the run's GIST checkpoint
    assert [m.label for m in at.metric] == ["off-diagonal ratio · Hessian", "A–B mass share · Hessian",
                                           "Adam-diagonal fit error (H)", "best-diagonal error (H)", "F̂/H top-8 overlap"]
    ck = rep["checkpoints"]["1"]
    assert _metric(at, "off-diagonal ratio") == f"{ck['hessian']['offdiag_ratio']:.3f}"
    assert _metric(at, "A–B mass share") == f"{ck['hessian']['mass_AB']:.1%}"
    assert _metric(at, "F̂/H") == f"{ck['overlap_fisher_hessian']:.3f}"
    assert "r/P = 0.1250" in next(m.help for m in at.metric if m.label.startswith("F̂/H"))  # random reference
    caps = _captions(at)
    assert "reported as measured" in caps and "64 coordinates (32 from A" in caps and "24 target examples" in caps
    charts = at.get("plotly_chart")
    assert len(charts) == 3  # heatmap, diagonals, per-epoch trend
    heat = json.loads(charts[0].proto.spec)
    assert _array(heat["data"][0]["z"]).shape == (64, 64) and len(heat["layout"]["shapes"]) == 2  # the A/B boundary lines
    assert heat["layout"]["xaxis"]["ticktext"] == ["A (32)", "B (32)"]
    table = at.dataframe[0].value
    assert table["epoch"].tolist() == [1, 2] and {"r95", "r99", "offdiag_fisher", "overlap_random"} <= set(table)

    at.radio(key="geo_matrix").set_value("fisher").run()
    assert not at.exception and _metric(at, "off-diagonal ratio · empirical Fisher") == \
        f"{ck['fisher']['offdiag_ratio']:.3f}"
    at.radio(key="geo_value").set_value("corr").run()
    assert not at.exception
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert heat["zmin"] == -1 and heat["zmax"] == 1
    at.radio(key="geo_epoch").set_value(2).run()
    assert not at.exception
    assert _metric(at, "off-diagonal ratio") == f"{rep['checkpoints']['2']['fisher']['offdiag_ratio']:.3f}"
    at.radio(key="geo_matrix").set_value("gauss_newton").run()
    assert not at.exception and _metric(at, "A–B mass share · Gauss–Newton") == \
        f"{rep['checkpoints']['2']['gauss_newton']['mass_AB']:.1%}"


def test_curvature_page_without_geometry_offers_the_command(open_page, runs_dir):
    at = open_page("pages/6_Curvature.py", run="nodown")
    assert any(f"gist-lab geometry --run {runs_dir / 'nodown'}" in i.value for i in at.info)
    assert at.number_input(key="geo_coords").value == 2048 and at.text_input(key="geo_module")
    assert not at.button(key="launch_geometry").disabled  # not clicked: it would start a real geometry run
    at = open_page("pages/6_Curvature.py", run="pending")  # no warm-up checkpoints yet
    assert any("gist-lab geometry --run" in i.value for i in at.info)
    assert at.button(key="launch_geometry").disabled and "finish it first" in _captions(at)


# ----------------------------------------------------------------------------- security: names stay in the runs folder
@pytest.fixture
def fresh_root(tmp_path, monkeypatch) -> dict:
    """An empty runs root inside tmp_path (so anything written beside it shows) and a launcher that only records."""
    root = tmp_path / "runs"
    root.mkdir()
    monkeypatch.setenv("GIST_LAB_RUNS", str(root))
    calls = []
    monkeypatch.setattr(launcher, "launch", lambda run_dir, args, cmd=None: calls.append((Path(run_dir), args)) or {})
    return {"tmp": tmp_path, "root": root, "launches": calls}


def _files(d: Path) -> set[str]:
    return {str(p.relative_to(d)) for p in d.rglob("*")}


def _run_form(at_args: dict) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Run.py").run()
    assert not at.exception, at.exception
    for key, value in at_args.items():
        (at.text_input(key=key) if key == "run_name" else at.file_uploader(key=key)).set_value(value)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    return at


def test_run_page_launches_on_a_registry_model_with_cpu_settings(fresh_root):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Run.py").run()
    choice = at.selectbox(key="model_choice")
    smol = next(i for i in choice.options if "smollm2-135m" in str(i))
    choice.set_value(choice.options.index(smol) if isinstance(choice.value, int) else smol)
    at.text_input(key="run_name").set_value("smol-run")
    at.number_input(key="lora_layers").set_value(4)
    at.number_input(key="pool_size").set_value(300)
    next(b for b in at.button if b.label == "Launch").click().run()
    assert not at.exception, at.exception
    (run_dir, args), = fresh_root["launches"]
    assert run_dir.name == "smol-run" and args[args.index("--model") + 1] == "smollm2-135m"
    assert args[args.index("--lora-layers") + 1] == "4" and args[args.index("--pool-size") + 1] == "300"


@pytest.mark.parametrize("name", ["../escape", "../../escape", "a/b", "/ABS", ".hidden", "my run"])
def test_run_page_refuses_a_run_name_that_could_escape(fresh_root, name):
    tmp = fresh_root["tmp"]
    name = str(tmp / "abs-escape") if name == "/ABS" else name
    at = _run_form({"run_name": name, "pool_upload": ("pool.jsonl", b'{"prompt": "p", "response": "r"}\n',
                                                      "application/json")})
    errors = [e.value for e in at.error]
    assert any(e.startswith("Run folder name: bad run name") for e in errors), errors
    assert fresh_root["launches"] == []
    assert _files(tmp) == {"runs"}  # nothing inside the runs root, nothing beside it


def test_run_page_stores_uploads_under_run_inputs(fresh_root):
    root = fresh_root["root"]
    pool, val = b'{"prompt": "p", "response": "r"}\n', b"prompt,response\nq,a\n"
    at = _run_form({"run_name": "up-run", "pool_upload": ("../../evil.jsonl", pool, "application/json"),
                    "target_upload": ("my val (2).csv", val, "text/csv")})
    assert not at.error, [e.value for e in at.error]
    stored_pool, stored_val = root / "up-run" / "inputs" / "evil.jsonl", root / "up-run" / "inputs" / "my_val__2_.csv"
    assert stored_pool.read_bytes() == pool and stored_val.read_bytes() == val
    assert _files(fresh_root["tmp"]) == {"runs", "runs/up-run", "runs/up-run/inputs", "runs/up-run/inputs/evil.jsonl",
                                         "runs/up-run/inputs/my_val__2_.csv"}  # no temp file left either
    [(run_dir, args)] = fresh_root["launches"]
    assert run_dir == root / "up-run"
    assert args[args.index("--train") + 1] == str(stored_pool.resolve())
    assert args[args.index("--target") + 1] == str(stored_val.resolve())
    assert args[args.index("--out") + 1] == str((root / "up-run").resolve())


def test_run_page_refuses_two_uploads_with_the_same_stored_name(fresh_root):
    data = b'{"prompt": "p", "response": "r"}\n'
    at = _run_form({"run_name": "twins", "pool_upload": ("a/data.jsonl", data, "application/json"),
                    "target_upload": ("b/data.jsonl", data, "application/json")})
    assert any("both named `data.jsonl`" in e.value for e in at.error)
    assert fresh_root["launches"] == [] and _files(fresh_root["tmp"]) == {"runs"}


def test_run_page_without_uploads_uses_the_text_fields(fresh_root):
    _run_form({"run_name": " plain "})  # surrounding blanks are dropped
    [(run_dir, args)] = fresh_root["launches"]
    assert run_dir == fresh_root["root"] / "plain" and args[args.index("--train") + 1].endswith("pool.jsonl")
    assert _files(fresh_root["tmp"]) == {"runs"}  # the (recording) launcher made no folder, the page none either


def test_demo_buttons_launch_under_the_runs_root(fresh_root):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    at.switch_page("pages/1_Run.py").run()
    at.button(key="quick_demo").click().run()
    assert not at.exception, at.exception
    [(run_dir, args)] = fresh_root["launches"]
    assert run_dir.parent == fresh_root["root"] and run_dir.name.endswith("-quick")
    assert args[0] == "demo" and args[args.index("--out") + 1] == str(run_dir.resolve())


@pytest.mark.parametrize("link", ["../..", "..", "../outside/victim", "/ABS", "fake/../../outside/victim", "fake/"])
def test_a_run_link_outside_the_runs_root_is_not_followed(open_page, tmp_path, link):
    victim = tmp_path / "outside" / "victim"  # a real run folder next to (not in) the runs root
    victim.mkdir(parents=True)
    (victim / "config.json").write_text('{"model": "SECRET"}')
    link = str(victim) if link == "/ABS" else link
    for page in ["pages/1_Run.py", "pages/3_Scores.py", "pages/7_Compare.py"]:
        at = open_page(page, run=link)
        assert any(e.value.startswith("Ignored the run in the link: bad run name") for e in at.error), page
        assert at.query_params.get("run") != link and at.sidebar.selectbox[0].value != link
        assert "victim" not in _captions(at) and not any("victim" in m.value or "SECRET" in m.value for m in at.markdown)


def test_run_folders_the_dashboard_refuses_are_listed_but_not_linked(open_page, runs_dir, tmp_path):
    bad = runs_dir / "has space"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    (runs_dir / "linked-out").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere" / "config.json").write_text("{}")
    try:
        at = open_page()
        assert {"has space", "linked-out"} <= set(at.dataframe[0].value["run"])
        caps = _captions(at)
        assert "not opened by the dashboard: bad run name 'has space'" in caps and "resolves outside" in caps
        links = [p.proto.query_string for p in at.get("page_link")]
        assert any(q.endswith("run=fake") for q in links)
        assert not any(q.endswith(("has+space", "has%20space", "linked-out")) for q in links)
        at.switch_page("pages/1_Run.py").run()
        assert not at.exception and {"fake", "pending"} <= set(at.sidebar.selectbox[0].options)
        assert not {"has space", "linked-out"} & set(at.sidebar.selectbox[0].options)
    finally:
        (runs_dir / "linked-out").unlink()
        (bad / "config.json").unlink()
        bad.rmdir()


def test_streamlit_config_binds_to_localhost():
    toml = tomllib or pytest.importorskip("tomli")
    cfg = toml.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["browser"]["gatherUsageStats"] is False
    assert cfg["client"]["toolbarMode"] == "viewer"  # no "Deploy" button: a local tool has nowhere to deploy
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    out = subprocess.run([sys.executable, "-c", "from streamlit import config; print(config.get_option('server.address'))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "127.0.0.1", out.stderr  # what `streamlit run app.py` binds to
