"""The dashboard pages under streamlit.testing.v1.AppTest on a synthetic run (no browser, no torch)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_run import make_fake_run  # noqa: E402

from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/1_Run.py", "pages/2_Spectrum.py", "pages/3_Scores.py", "pages/4_Examples.py", "pages/5_Map.py"]


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("app-runs")
    make_fake_run(root / "fake", n_pool=800, n_val=12, r=6)
    (root / "pending").mkdir()  # a run with a config but no scores yet
    (root / "pending" / "config.json").write_text((root / "fake" / "config.json").read_text())
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


def _captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_home_lists_runs_and_offers_the_demo(open_page):
    at = open_page()
    table = at.dataframe[0].value
    assert {"fake", "pending"} <= set(table["run"]) and {"status", "model", "data", "budget", "rank", "precision"} <= set(table)
    assert "done" in table.set_index("run").loc["fake", "status"]
    assert any("Launch the bundled demo" in b.label for b in at.button)
    assert "Curvature" in _captions(at) and "Compare" in _captions(at)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders(open_page, page):
    at = open_page(page)
    assert at.sidebar.selectbox[0].value == "fake"  # the run picker followed ?run=
    assert at.query_params.get("run") == "fake"


@pytest.mark.parametrize("page", PAGES[1:])
def test_pages_without_scores_point_to_the_run_page(open_page, page):
    at = open_page(page, run="pending")
    assert any("no scores yet" in i.value for i in at.info)


def test_run_page_shows_stages_and_form(open_page):
    at = open_page("pages/1_Run.py")
    assert any("fake" in m.value and "done" in m.value for m in at.markdown)
    assert len(at.get("progress")) == 6  # data, warmup, 2 x val_grads, train_proj, scores
    assert any(b.label.startswith("Quick demo") for b in at.button)
    assert _metric(at, "precision")


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
    assert "160 examples" in at.get("download_button")[0].proto.label


def test_examples_filters_and_drilldown(open_page):
    at = open_page("pages/4_Examples.py")
    assert len(at.dataframe[0].value) == 40 and at.dataframe[0].value["selected"].all()
    at.radio(key="ex_which").set_value("all").run()
    assert len(at.dataframe[0].value) == 800
    at.multiselect(key="ex_kinds").set_value(["wrong"]).run()
    assert not at.exception and set(at.dataframe[0].value["kind"]) == {"wrong"}
    assert any("Nearest target examples" in m.value for m in at.markdown)
    assert len(at.dataframe[-1].value) == 5  # nearest targets of the first row


def test_map_pca_and_umap_on_request(open_page):
    at = open_page("pages/5_Map.py")
    assert len(at.get("plotly_chart")) == 1
    at.selectbox(key="map_color").set_value("truth").run()
    assert not at.exception
    at.radio(key="map_method").set_value("UMAP").run()
    assert not at.exception and any("No UMAP cached" in i.value for i in at.info)
    assert at.button(key="map_compute")
