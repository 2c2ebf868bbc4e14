"""What the dashboard shows of a working selection (gist_core.viewer.curation), checked against the run's files read
independently (scores.parquet, selected.jsonl, edits.json, examples.parquet) on the synthetic run of fake_run.py."""
from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from fake_run import make_fake_run

from gist_core.data.domains import domain_label
from gist_core.runner import curation
from gist_core.store.layout import RunLayout
from gist_core.viewer import brushing, examples, rescore, rundir
from gist_core.viewer import curation as view


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("viewer-curation") / "run", n_pool=300, n_val=8, r=4)


@pytest.fixture
def run(built, tmp_path):
    shutil.copytree(built, tmp_path / "run")
    return tmp_path / "run"


def files(run) -> tuple[pd.DataFrame, list[str], list[str]]:
    """(scores.parquet, the method's ids from selected.jsonl, the working ids from edits.json walked as sets)."""
    lay = RunLayout(run)
    scores = pd.read_parquet(lay.scores)
    base = [json.loads(x)["id"] for x in lay.selected.read_text().splitlines() if x.strip()]
    chosen = set(base)
    for op in json.loads(lay.curation_edits.read_text())["ops"] if lay.curation_edits.exists() else []:
        chosen = chosen | set(op["ids"]) if op["action"] == "add" else chosen - set(op["ids"])
    return scores, base, [i for i in scores["id"] if i in chosen]


def edit_some(run) -> None:
    scores, base, _ = files(run)
    curation.edit(run, remove=base[:3], view="map lasso")
    curation.edit(run, add=list(scores["id"][~scores["selected_global"]][:4]), view="examples table")


def test_pending_counts_only_the_rows_that_would_change():
    to_add, to_remove = view.pending(["a", "b", "c"], ["d", "b", "a", "d", "e"])
    assert to_add == ["d", "e"] and to_remove == ["b", "a"]
    assert view.pending([], []) == ([], [])


def test_the_working_table_is_the_working_selection_in_pool_order(run):
    edit_some(run)
    scores, base, working = files(run)
    table = view.working_table(run)
    assert table["id"].tolist() == working and len(working) == len(base) + 1
    assert list(table.columns) == list(view.TABLE_COLUMNS)
    stored = scores.set_index("id").loc[working]
    assert table["score"].tolist() == stored["score"].tolist() and table["rank"].tolist() == stored["rank"].tolist()
    ex = pd.read_parquet(RunLayout(run).examples).set_index("id").loc[working]
    assert table["prompt"].tolist() == ex["prompt"].tolist()
    assert table["domain"].tolist() == [domain_label(p, r) for p, r in zip(ex["prompt"], ex["response"])]


def test_difference_status_and_edits(run):
    edit_some(run)
    scores, base, working = files(run)
    diff = view.difference(run)
    assert diff["removed"]["id"].tolist() == [i for i in scores["id"] if i in set(base) - set(working)]
    assert diff["added"]["id"].tolist() == [i for i in scores["id"] if i in set(working) - set(base)]
    assert len(diff["removed"]) == 3 and len(diff["added"]) == 4
    c = curation.working_selection(run)
    assert view.status_text(c) == (f"Working selection: **{len(working)} rows** · base: the method's selection of "
                                   f"{len(base)} (global rule, rank r = 4) · +4 added, −3 removed · 2 edits")
    table = view.edits_table(c)
    assert table[["edit", "action", "rows", "view"]].values.tolist() == [[1, "remove", 3, "map lasso"],
                                                                          [2, "add", 4, "examples table"]]
    curation.edit(run, exclude=["source=synthetic-list"], view="curate page")
    assert view.edits_table(curation.working_selection(run))["action"].iloc[-1] == "exclude source=synthetic-list"


def test_group_counts_against_a_plain_count(run):
    edit_some(run)
    scores, _, working = files(run)
    counts = view.group_counts(run, "skill").set_index("value")
    naive = scores.groupby("skill")["id"].agg(["size", lambda ids: sum(i in set(working) for i in ids)])
    naive.columns = ["pool_rows", "in_working"]
    assert counts.sort_index().astype(int).equals(naive.sort_index().astype(int))
    assert counts["in_working"].is_monotonic_decreasing
    assert set(view.group_keys(run)) == {"source", "skill", "subtask", "kind", "domain"}  # no clusters yet


def test_the_shown_selection_against_the_working_selection(run):
    settings = rescore.default_settings(rundir.load_run(run))
    at_run = rescore.rescored_frame(run, settings["rank"], settings["balance"], settings["budget"], settings["kind"])
    scores, base, _ = files(run)
    assert view.selection_ids(at_run) == tuple(base)  # the run's own settings give its stored selection
    c = curation.working_selection(run)
    assert view.shown_against_working(base, c)["is_base"]
    other = rescore.rescored_frame(run, 1, "global", settings["budget"], settings["kind"])
    shown = view.selection_ids(other)
    rel = view.shown_against_working(shown, c)
    assert list(shown) == [i for i, s in zip(scores["id"], other.frame["selected"]) if s]
    assert rel["differ_from_base"] == len(set(shown) ^ set(base)) > 0 and not rel["is_base"]
    assert (rel["to_add"], rel["to_remove"]) == (len(set(shown) - set(base)), len(set(base) - set(shown)))
    curation.take(run, shown, view="rank r=1 selection")
    assert view.shown_against_working(shown, curation.working_selection(run))["is_working"]


def test_mark_working_and_the_selection_shape():
    frame = pd.DataFrame({"id": ["a", "b", "c"], "selected": [True, True, False]})
    marked = view.mark_working(frame, ["c", "a"])
    assert marked["working"].tolist() == [True, False, True]
    assert examples.filter_frame(marked, selected="working selection")["id"].tolist() == ["a", "c"]
    assert brushing.selection_shape({"box": [{"x": [0, 1]}], "lasso": [], "points": [{}]}) == "box"
    assert brushing.selection_shape({"box": [], "lasso": [{"x": [0]}]}) == "lasso"
    assert brushing.selection_shape({"box": [{}], "lasso": [{}]}) == "box + lasso"
    assert brushing.selection_shape({"points": [{"x": 1}]}) == "points"
    assert brushing.selection_shape({"points": []}) is None and brushing.selection_shape(None) is None
