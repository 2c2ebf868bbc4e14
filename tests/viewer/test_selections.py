"""gist_core.viewer.selections on synthetic run folders, against naive recomputations from the files on disk
(naive_selection: plain numpy cosines and argsort top-k; round-robin by hand, selected.jsonl read line by line, sets by hand)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_compare, make_fake_run
from naive_selection import jaccard, top_k_ids

from gist_core.errors import ConfigError
from gist_core.runner import curation
from gist_core.viewer import selections

BUDGET = 0.05


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sbs-runs")
    a = make_fake_compare(make_fake_run(root / "a", n_pool=1200, n_val=12, r=8), n_seeds=1)
    b = make_fake_run(root / "b", n_pool=1500, n_val=12, r=6, seed=1)  # another draw, 300 rows A's pool lacks
    return {"a": a, "b": b}


def naive_round_robin(cols: np.ndarray, k: int) -> list[int]:
    taken: list[int] = []
    for n in range(k):
        t = n % cols.shape[1]
        taken.append(next(i for i in np.argsort(-cols[:, t], kind="stable") if i not in taken))
    return taken


def test_gist_at_a_rank_is_the_naive_top_k(runs):
    for rank in (1, 3, 8):
        sel = selections.resolve(runs["a"], "gist", rank, "global", BUDGET, "subspace")
        assert sel.ids == top_k_ids(runs["a"], rank, BUDGET) and sel.k == 60
        # the ranks are those of the score the selection was made by: the selected rows are ranks 1..k
        assert sorted(sel.frame.loc[sel.frame["selected"], "rank"]) == list(range(1, 61))


def test_overlap_rows_and_enters_leaves_of_two_ranks(runs):
    a = selections.resolve(runs["a"], "gist", 2, "global", BUDGET, "subspace")
    b = selections.resolve(runs["a"], "gist", 6, "global", BUDGET, "subspace")
    sa, sb = top_k_ids(runs["a"], 2), top_k_ids(runs["a"], 6)
    ov = selections.overlap(a, b)
    assert (ov["A"], ov["B"], ov["both"], ov["only A"], ov["only B"]) == (len(sa), len(sb), len(sa & sb),
                                                                          len(sa - sb), len(sb - sa))
    assert ov["jaccard"] == pytest.approx(jaccard(sa, sb)) and 0 < ov["jaccard"] < 1
    assert ov["B not in A's pool"] == ov["A not in B's pool"] == 0
    assert selections.differ_in_rank_only(a.spec, b.spec)
    assert not selections.differ_in_rank_only(a.spec, selections.Spec(runs["a"], "gist", 6, "subtask", BUDGET, "subspace"))
    enters, leaves = selections.enters_leaves(a, b)
    assert set(enters["id"]) == sb - sa and set(leaves["id"]) == sa - sb
    assert enters["rank B"].is_monotonic_increasing and leaves["rank A"].is_monotonic_increasing
    both = selections.rows(a, b, "both")
    assert set(both["id"]) == sa & sb
    # each row's score and rank in A and B are its score and rank at that rank (read back from the frames)
    fa, fb = a.frame.set_index("id"), b.frame.set_index("id")
    row = both.iloc[0]
    assert (row["score A"], row["rank A"], row["score B"], row["rank B"]) == pytest.approx(
        (fa.at[row["id"], "score"], fa.at[row["id"], "rank"], fb.at[row["id"], "score"], fb.at[row["id"], "rank"]))
    side = selections.side_of(a, b)
    assert side.value_counts().to_dict() == {"neither": 1200 - len(sa | sb), "only A": len(sa - sb),
                                             "only B": len(sb - sa), "both": len(sa & sb)}


def test_group_counts_are_counted_by_hand(runs):
    a = selections.resolve(runs["a"], "gist", 3, "global", BUDGET, "subspace")
    b = selections.resolve(runs["a"], "gist", 8, "subtask", BUDGET, "subspace")
    ex = pd.read_parquet(runs["a"] / "examples.parquet").set_index("id")
    for by in ("subtask", "source"):
        counts = selections.group_counts(a, b, by).set_index(by)
        for name, ids in (("A", a.ids), ("B", b.ids), ("both", a.ids & b.ids)):
            expect = ex.loc[sorted(ids), by].value_counts()
            assert counts[name][counts[name] > 0].sort_index().to_dict() == expect.sort_index().to_dict()
    dom = selections.group_counts(a, b, "domain")
    assert dom["A"].sum() == len(a.ids) and dom["both"].sum() == len(a.ids & b.ids)


def test_compare_methods_select_as_compare_does(runs):
    cs = pd.read_parquet(runs["a"] / "compare" / "scores.parquet")
    assert selections.compare_methods(runs["a"]) == {"gist": False, "less": True, "rawcos": True, "embedding": False,
                                                     "length": False}
    k = 60
    glob = selections.resolve(runs["a"], "compare", 1, "global", BUDGET, None, "embedding")
    assert glob.ids == set(cs["id"].to_numpy()[np.argsort(-cs["score:embedding"].to_numpy(), kind="stable")[:k]])
    quota = selections.resolve(runs["a"], "compare", 1, "subtask", BUDGET, None, "less")
    cols = cs[[c for c in cs.columns if c.startswith("col:less:")]].to_numpy()
    assert quota.ids == set(cs["id"].to_numpy()[naive_round_robin(cols, k)])
    with pytest.raises(ConfigError, match="global rule"):
        selections.resolve(runs["a"], "compare", 1, "subtask", BUDGET, None, "length")
    with pytest.raises(ConfigError, match="no compare scores"):
        selections.resolve(runs["b"], "compare", 1, "global", BUDGET, None, "less")


def test_stored_and_working_selections(runs, tmp_path):
    run = make_fake_run(tmp_path / "curated", n_pool=400, n_val=8, r=4)
    lines = (run / "selected.jsonl").read_text().splitlines()
    stored_ids = {json.loads(ln)["id"] for ln in lines}
    stored = selections.resolve(run, "stored")
    assert stored.ids == stored_ids and stored.k == len(lines) == 20
    drop, add = sorted(stored_ids)[:3], ["pool-000399", "pool-000398"]
    add = [i for i in add if i not in stored_ids]
    curation.edit(run, remove=drop, add=add)
    working = selections.resolve(run, "working")
    assert working.ids == (stored_ids - set(drop)) | set(add)
    ov = selections.overlap(stored, working)
    assert (ov["only A"], ov["only B"], ov["both"]) == (3, len(add), 17)
    assert selections.sources(run) == ["gist", "stored", "working"]
    assert selections.sources(runs["a"]) == ["gist", "compare", "stored", "working"]


def test_two_runs_are_matched_by_id(runs):
    a = selections.resolve(runs["a"], "gist", 3, "global", BUDGET, "subspace")
    b = selections.resolve(runs["b"], "gist", 3, "global", BUDGET, "subspace")
    sa, sb = top_k_ids(runs["a"], 3), top_k_ids(runs["b"], 3)
    pool_a = set(pd.read_parquet(runs["a"] / "examples.parquet")["id"])
    ov = selections.overlap(a, b)
    assert (ov["A"], ov["B"], ov["both"]) == (60, 75, len(sa & sb))
    assert ov["B not in A's pool"] == len(sb - pool_a) > 0 and ov["A not in B's pool"] == 0
    only_b = selections.rows(a, b, "only B")
    outside = only_b[~only_b["id"].isin(pool_a)]
    assert outside["score A"].isna().all() and outside["rank A"].isna().all() and outside["rank B"].notna().all()
    side = selections.side_of(a, b)  # A's pool rows only: B's rows outside it cannot be drawn on A's map
    assert (side == "only B").sum() == len(sb - sa) - len(sb - pool_a)


def test_rank_curve_matches_one_resolve_per_rank(runs):
    ref = top_k_ids(runs["a"], 5)
    curve = selections.rank_curve(runs["a"], "global", BUDGET, "subspace", sorted(ref))
    assert list(curve["rank"]) == list(range(1, 9)) and curve.attrs["ms"] > 0
    assert curve.set_index("rank").at[5, "jaccard"] == 1.0
    for r in (1, 4, 8):
        assert curve.set_index("rank").at[r, "jaccard"] == pytest.approx(jaccard(top_k_ids(runs["a"], r), ref))
    assert curve.set_index("rank").at[4, "previous rank"] == pytest.approx(
        jaccard(top_k_ids(runs["a"], 4), top_k_ids(runs["a"], 3)))
    assert np.isnan(curve.at[0, "previous rank"])


def test_bad_specs_say_why(runs, tmp_path):
    with pytest.raises(ConfigError, match="unknown source"):
        selections.resolve(runs["a"], "oracle")
    with pytest.raises(ConfigError, match="unknown rule"):
        selections.resolve(runs["a"], "gist", 2, "best")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no scores yet"):
        selections.resolve(tmp_path / "empty")
