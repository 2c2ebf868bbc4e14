"""The Side by side page under streamlit.testing.v1.AppTest on synthetic runs: its defaults, the numbers it shows
against sets computed from the run folders by hand, two ranks, two runs, a compare method, and its bad states."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_compare, make_fake_run
from naive_selection import top_k_ids
from repo import ROOT
from streamlit.testing.v1 import AppTest

from gist_core.viewer import selections

PAGE = "pages/11_Side_by_side.py"


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sbs-app")
    make_fake_compare(make_fake_run(root / "one", n_pool=600, n_val=20, r=8), n_seeds=1)
    make_fake_run(root / "two", n_pool=700, n_val=20, r=8, seed=1)
    summary = json.loads((root / "one" / "summary.json").read_text())  # a run made at rank 3 of the 8 stored
    (root / "one" / "summary.json").write_text(json.dumps({**summary, "rank": 3}))
    (root / "pending").mkdir()  # no scores yet
    (root / "pending" / "config.json").write_text((root / "one" / "config.json").read_text())
    return root


@pytest.fixture
def page(runs_dir, monkeypatch):
    monkeypatch.setenv("GIST_LAB_RUNS", str(runs_dir))

    def _open(run: str = "one") -> AppTest:
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        at.query_params["run"] = run
        at.run()
        at.switch_page(PAGE).run()
        assert not at.exception, at.exception
        return at
    return _open


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def shown_numbers(at: AppTest) -> tuple[int, int, int, float]:
    m = metrics(at)
    return int(m["|A|"].replace(",", "")), int(m["|B|"].replace(",", "")), int(m["|A ∩ B|"].replace(",", "")), \
        float(m["Jaccard"])


def test_defaults_are_the_run_and_twice_its_rank(page, runs_dir):
    at = page()
    rank = json.loads((runs_dir / "one" / "summary.json").read_text())["rank"]
    assert rank == 3
    assert at.slider(key="sbs_A_rank").value == rank and at.slider(key="sbs_B_rank").value == 2 * rank
    sa, sb = top_k_ids(runs_dir / "one", rank), top_k_ids(runs_dir / "one", 2 * rank)
    assert shown_numbers(at) == (len(sa), len(sb), len(sa & sb), round(len(sa & sb) / len(sa | sb), 3))
    heads = [h.value for h in at.subheader]
    assert any(h.startswith("What enters and leaves") for h in heads)
    enters, leaves, only_a, only_b, both = (d.value for d in at.dataframe)  # in the page's order
    assert set(enters["id"]) == sb - sa and set(leaves["id"]) == sa - sb
    assert set(only_a["id"]) == sa - sb and set(only_b["id"]) == sb - sa and set(both["id"]) == sa & sb
    assert list(only_a.columns[:5]) == ["id", "score A", "rank A", "score B", "rank B"]
    charts = {c.key for c in at.get("plotly_chart")}
    assert {"overlap_bar", "rank_curve", "group_bars", "side_map"} <= charts


def test_a_run_at_its_last_rank_is_compared_with_half_of_it(page, runs_dir):
    at = page(run="two")  # made at rank 8 = r_max: twice that is not stored
    assert at.slider(key="sbs_A_rank").value == 8 and at.slider(key="sbs_B_rank").value == 4


def test_two_ranks_moved_by_the_slider(page, runs_dir):
    at = page()
    at.slider(key="sbs_A_rank").set_value(1).run()
    at.slider(key="sbs_B_rank").set_value(5).run()
    assert not at.exception, at.exception
    sa, sb = top_k_ids(runs_dir / "one", 1), top_k_ids(runs_dir / "one", 5)
    assert shown_numbers(at) == (len(sa), len(sb), len(sa & sb), round(len(sa & sb) / len(sa | sb), 3))
    assert any(h.value == "What enters and leaves from r = 1 to r = 5" for h in at.subheader)


def test_two_runs(page, runs_dir):
    at = page()
    at.selectbox(key="sbs_B_run").set_value("two").run()
    assert not at.exception, at.exception
    ra, rb = at.slider(key="sbs_A_rank").value, at.slider(key="sbs_B_rank").value
    sa, sb = top_k_ids(runs_dir / "one", ra), top_k_ids(runs_dir / "two", rb)
    assert shown_numbers(at) == (len(sa), len(sb), len(sa & sb), round(len(sa & sb) / len(sa | sb), 3))
    pool_a = set(pd.read_parquet(runs_dir / "one" / "examples.parquet")["id"])
    assert int(metrics(at)["B rows not in A's pool"]) == len(sb - pool_a) > 0
    assert not any(h.value.startswith("What enters and leaves") for h in at.subheader)  # not a rank change


def test_a_compare_method_against_gist(page, runs_dir):
    at = page()
    at.radio(key="sbs_B_source").set_value("compare").run()
    at.selectbox(key="sbs_B_method").set_value("length").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="sbs_B_rule").options == ["global (paper)"]  # a score without subtask columns: one rule
    cs = pd.read_parquet(runs_dir / "one" / "compare" / "scores.parquet")
    a_ids = top_k_ids(runs_dir / "one", at.slider(key="sbs_A_rank").value)
    b_ids = set(cs["id"].to_numpy()[np.argsort(-cs["score:length"].to_numpy(), kind="stable")[:len(a_ids)]])
    assert shown_numbers(at)[:3] == (len(a_ids), len(b_ids), len(a_ids & b_ids))


def test_stored_selection_is_offered_and_counted(page, runs_dir):
    at = page()
    assert at.radio(key="sbs_A_source").options == [selections.SOURCES[s] for s in
                                                     ("gist", "compare", "stored", "working")]
    at.radio(key="sbs_B_source").set_value("stored").run()
    stored = {json.loads(ln)["id"] for ln in (runs_dir / "one" / "selected.jsonl").read_text().splitlines()}
    assert shown_numbers(at)[1] == len(stored)


def test_a_run_without_scores_points_to_the_run_page(page):
    at = page(run="pending")
    assert any("no scores yet" in i.value for i in at.info)
