"""Curation in the dashboard under streamlit.testing.v1.AppTest: the Curate page, and the edit buttons of the Map
(a box), Scores (a brushed histogram) and Examples (ticked rows), each edit read back from curation/edits.json and
the working selection recomputed from the files alone (selected.jsonl, the ops walked as sets)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run
from repo import ROOT
from streamlit.testing.v1 import AppTest
from streamlit.util import AttributeDictionary

from gist_core.methods.gist import rescore as gist_rescore
from gist_core.store.layout import RunLayout
from gist_core.viewer import pool_map, rescore, rundir


@pytest.fixture
def runs(tmp_path, monkeypatch):
    make_fake_run(tmp_path / "fake", n_pool=400, n_val=8, r=4)
    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path))
    return tmp_path


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "fake"
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def ops(run) -> list[dict]:
    path = RunLayout(run).curation_edits
    return json.loads(path.read_text())["ops"] if path.exists() else []


def working(run) -> list[str]:
    lay = RunLayout(run)
    chosen = {json.loads(x)["id"] for x in lay.selected.read_text().splitlines() if x.strip()}
    for op in ops(run):
        chosen = chosen | set(op["ids"]) if op["action"] == "add" else chosen - set(op["ids"])
    return [i for i in pd.read_parquet(lay.scores, columns=["id"])["id"] if i in chosen]


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def table_with(at: AppTest, column: str) -> pd.DataFrame:
    """The first table on the page with `column` (AppTest keeps no key on a table that is not a widget)."""
    return next(d.value for d in at.dataframe if column in d.value)


def chart_selection(**shapes) -> AttributeDictionary:
    """A plotly chart's selection state as the browser sends it (box / lasso shapes, no points)."""
    return AttributeDictionary({"selection": AttributeDictionary({"points": [], "point_indices": [], "box": [],
                                                                  "lasso": [], **shapes})})


def test_curate_page_excludes_undoes_and_resets(runs):
    run = runs / "fake"
    at = open_page("pages/12_Curate.py")
    base = working(run)
    assert f"Working selection: **{len(base)} rows**" in at.markdown[0].value
    assert at.dataframe[0].value["id"].tolist() == base
    assert [d.proto.label for d in at.get("download_button")] == [f"Download the working selection ({len(base)} rows)",
                                                                    "Provenance record (JSON)"]
    at.selectbox(key="cur_group_key").set_value("skill").run()
    skill = pd.read_parquet(RunLayout(run).scores).set_index("id")["skill"]
    top = skill[base].value_counts().index[0]  # the value with most rows in the working selection comes first
    assert at.selectbox(key="cur_group_value").value == top
    n_top = int((skill[base] == top).sum())
    at.button(key="cur_exclude").click().run()
    assert not at.exception, at.exception
    assert [(o["action"], o["group"], o["view"]) for o in ops(run)] == [("exclude", {"by": "skill", "value": top},
                                                                         "curate page")]
    assert set(ops(run)[0]["ids"]) == set(skill.index[skill == top])
    assert working(run) == [i for i in base if skill[i] != top] and len(working(run)) == len(base) - n_top
    assert at.dataframe[0].value["id"].tolist() == working(run)  # drawn after the edit
    assert table_with(at, "action")["action"].tolist() == [f"exclude skill={top}"]
    assert any(m.value == f"**Removed** by the edits: {n_top} rows" for m in at.markdown) and n_top > 1
    assert any(f"Excluded skill={top}" in s.value for s in at.success)
    at.button(key="cur_undo").click().run()
    assert ops(run) == [] and working(run) == base and any("Undone: exclude" in s.value for s in at.success)
    at.button(key="cur_exclude").click().run()
    at.button(key="cur_reset").click().run()
    assert not at.exception and ops(run) == [] and working(run) == base


def test_map_box_rows_leave_the_working_selection(runs):
    run = runs / "fake"
    at = open_page("pages/5_Map.py")
    rank = at.slider(key="rank_map").value
    drawn = pool_map.map_coords(run, rank, "pca").pool  # the points the chart draws: pool row, x, y
    x, y = drawn["x"].to_numpy(), drawn["y"].to_numpy()
    box = {"x": [float(np.quantile(x, 0.6)), float(x.max())], "y": [float(y.min()), float(y.max())]}
    at.session_state["map_chart"] = chart_selection(box=[box])
    at.run()
    assert not at.exception, at.exception
    inside = (x >= box["x"][0]) & (x <= box["x"][1]) & (y >= box["y"][0]) & (y <= box["y"][1])
    listed = at.dataframe[0].value
    pool_ids = pd.read_parquet(RunLayout(run).scores, columns=["id"])["id"].to_numpy()
    assert set(listed["id"]) == set(pool_ids[drawn["row"].to_numpy()[inside]]) and 0 < len(listed) < len(x)
    base = working(run)
    in_working = [i for i in base if i in set(listed["id"])]
    assert in_working and f"Remove {len(in_working)} from the working selection" in labels(at)
    at.button(key="map_edit_remove").click().run()
    assert not at.exception, at.exception
    assert [(o["action"], o["ids"], o["view"]) for o in ops(run)] == [("remove", in_working, "map box")]
    assert working(run) == [i for i in base if i not in set(in_working)]
    assert "Remove 0 from the working selection" in labels(at)  # the listed rows are out now
    names = [d.proto.label for d in at.get("download_button")]
    assert f"Download exactly these rows ({len(listed)} rows)" in names


def test_examples_ticked_rows_are_removed_and_added(runs):
    run = runs / "fake"
    at = open_page("pages/4_Examples.py")
    table = at.dataframe(key="ex_table").value
    assert table["working"].all() and len(table) == len(working(run))
    at.session_state["ex_table"] = {"selection": {"rows": [0, 2], "columns": [], "cells": []}}
    at.run()
    assert "Remove 2 from the working selection" in labels(at) and "Add 0 to the working selection" in labels(at)
    ticked = table["id"].iloc[[0, 2]].tolist()
    assert any(ticked[0] in m.value for m in at.markdown)  # the first ticked row in the drill-down
    at.button(key="ex_edit_remove").click().run()
    assert [(o["action"], sorted(o["ids"]), o["view"]) for o in ops(run)] == [("remove", sorted(ticked),
                                                                                "examples table")]
    at.radio(key="ex_which").set_value("working selection").run()
    shown = at.dataframe(key="ex_table").value
    assert set(shown["id"]) == set(working(run)) and not set(ticked) & set(shown["id"])
    at.radio(key="ex_which").set_value("not selected").run()
    at.session_state["ex_table"] = {"selection": {"rows": [1], "columns": [], "cells": []}}
    at.run()
    extra = at.dataframe(key="ex_table").value["id"].iloc[1]
    at.button(key="ex_edit_add").click().run()
    assert not at.exception and ops(run)[-1]["ids"] == [extra] and extra in working(run)


def test_scores_brushed_range_joins_the_working_selection(runs):
    run = runs / "fake"
    at = open_page("pages/3_Scores.py")
    score = pd.read_parquet(RunLayout(run).scores).set_index("id")["score"]
    lo, hi = float(score.quantile(0.8)), float(score.quantile(0.9))
    at.session_state["hist_source"] = chart_selection(box=[{"x": [hi, lo], "y": [0, 10]}])
    at.run()
    assert not at.exception, at.exception
    base = working(run)
    in_range = [i for i in score.index if lo <= score[i] <= hi]
    to_add = [i for i in in_range if i not in set(base)]
    assert f"Add {len(to_add)} to the working selection" in labels(at)
    at.button(key="scores_edit_add").click().run()
    assert [(o["action"], o["ids"], o["view"]) for o in ops(run)] == [("add", to_add, "histogram box")]


def test_the_shown_rank_selection_is_taken_as_edits(runs):
    run = runs / "fake"
    at = open_page("pages/5_Map.py")
    assert "map_cur_take" not in [b.key for b in at.button]  # at the run's own rank: the stored selection
    at.slider(key="rank_map").set_value(2).run()
    assert not at.exception and any("is not the working selection's base" in c.value for c in at.caption)
    k = len(working(run))
    score = gist_rescore.rescore(run, 2).score
    ids = pd.read_parquet(RunLayout(run).scores, columns=["id"])["id"].tolist()
    top = set(np.lexsort((np.arange(len(score)), -score))[:k].tolist())
    want = [i for n, i in enumerate(ids) if n in top]
    at.button(key="map_cur_take").click().run()
    assert not at.exception, at.exception
    assert working(run) == want
    view = f"rank r=2 selection (global, {rescore.default_settings(rundir.load_run(run))['kind']} score, {k} rows)"
    assert [o["view"] for o in ops(run)] == [view, view] and [o["action"] for o in ops(run)] == ["remove", "add"]
    assert any("The working selection is this shown selection now" in c.value for c in at.caption)


def test_edits_are_refused_while_a_job_writes_the_run(runs):
    run = runs / "fake"
    code = ("import time\nfrom gist_core.store.lock import writer_lock\n"
            f"with writer_lock({str(run)!r}, cmd=['gist-lab', 'cluster']):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        at = open_page("pages/12_Curate.py")
        assert any("A job is writing this run" in w.value and "gist-lab cluster" in w.value for w in at.warning)
        at.button(key="cur_exclude").click().run()
        assert not at.exception, at.exception
        assert any(e.value.startswith("Not recorded:") and "is being written by" in e.value for e in at.error)
        assert ops(run) == []
    finally:
        holder.kill()
        holder.wait()
