"""A run folder's working selection: curation/edits.json written atomically under the writer lock, read back by
a fresh reader, replayed over the method's selection (the synthetic run folder of tests/fake_run.py)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run
from repo import ROOT

from gist_core.errors import CurationError, RunLockedError, StoreError
from gist_core.methods import curation as cur
from gist_core.methods.curation import Op
from gist_core.runner import curation
from gist_core.store.artefacts import save_npy
from gist_core.store.layout import RunLayout

AT = "2025-01-01T00:00:00+00:00"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return make_fake_run(tmp_path_factory.mktemp("curation") / "run", n_pool=300, n_val=8, r=4)


@pytest.fixture
def run(built, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(built, d)
    return d


def pool_ids(run) -> list[str]:
    return pd.read_parquet(RunLayout(run).scores, columns=["id"])["id"].tolist()


def method_ids(run) -> list[str]:
    """The method's selection read independently: selected.jsonl's ids."""
    return [json.loads(x)["id"] for x in RunLayout(run).selected.read_text().splitlines() if x.strip()]


def naive_working(run) -> list[str]:
    """The working selection from the files alone: selected.jsonl's ids, the ops of edits.json walked as sets."""
    chosen = set(method_ids(run))
    path = RunLayout(run).curation_edits
    for o in (json.loads(path.read_text())["ops"] if path.exists() else []):
        chosen = chosen | set(o["ids"]) if o["action"] == "add" else chosen - set(o["ids"])
    return [i for i in pool_ids(run) if i in chosen]


def test_the_method_selection_is_the_runs_own(run):
    pool = curation.read_run(run)
    assert list(pool.base) == method_ids(run) and len(pool.base) == 15 and pool.rule == "global"
    assert list(pool.ids) == pool_ids(run)
    c = curation.working_selection(run)
    assert c.working == pool.base and c.counts == {"method": 15, "working": 15, "added": 0, "removed": 0, "edits": 0}
    assert not curation.edits_exist(run) and not c.base_changed


def test_the_edits_artefact_round_trips(run):
    ops = (Op("remove", ("pool-000003", "pool-000007"), "map lasso", AT),
           Op("exclude", ("pool-000001",), "cluster 3", AT, ("cluster", "3")),
           Op("add", ("pool-000002",), "examples table", AT))
    edits = curation.Edits(ops, {"rule": "global", "n": 15, "digest": "abc"})
    curation.save_edits(run, edits)
    assert curation.edits_exist(run)
    assert curation.load_edits(run) == edits
    data = json.loads(RunLayout(run).curation_edits.read_text())
    assert data["report"] == "curation" and data["version"] == 1 and data["ops"][1]["group"] == {"by": "cluster",
                                                                                                   "value": "3"}
    assert [p.name for p in RunLayout(run).curation_dir.iterdir()] == ["edits.json"]  # no temp file left behind


@pytest.mark.parametrize("text, message", [("{", "not valid JSON"), ('{"report": "summary", "ops": []}', "not a "
                         "curation edits file"), ('{"report": "curation", "version": 9, "ops": []}', "version 9 is newer"),
                         ('{"report": "curation", "version": 1, "ops": [{"action": "add"}]}', "edit 1: no 'ids'")])
def test_a_bad_edits_file_is_one_line(run, text, message):
    RunLayout(run).curation_edits.parent.mkdir()
    RunLayout(run).curation_edits.write_text(text)
    with pytest.raises(StoreError, match=message):
        curation.load_edits(run)


def test_edits_survive_a_reload_and_replay_as_the_files_say(run):
    base = method_ids(run)
    c = curation.edit(run, remove=base[:3], add=["pool-000000", "pool-000299"], view="map lasso")
    assert c.counts == {"method": 15, "working": 14, "added": 2, "removed": 3, "edits": 2}
    c = curation.edit(run, add=[base[0]], view="examples table")
    again = curation.working_selection(run)  # a fresh read of the folder
    assert again.working == c.working and list(again.working) == naive_working(run)
    assert [(o.action, o.view) for o in again.edits.ops] == [("remove", "map lasso"), ("add", "map lasso"),
                                                              ("add", "examples table")]
    assert again.edits.base == {"rule": "global", "n": 15, "digest": cur.digest(base)}
    code = (f"from gist_core.runner.curation import working_selection; "
            f"print(','.join(working_selection({str(run)!r}).working))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().split(",") == naive_working(run)  # another process reads the same selection


def test_undo_and_reset(run):
    base = curation.read_run(run).base
    curation.edit(run, remove=base[:2])
    after_one = curation.working_selection(run).working
    curation.edit(run, add=["pool-000100"])
    dropped, c = curation.undo(run)
    assert dropped.action == "add" and dropped.ids == ("pool-000100",)
    assert c.working == after_one == tuple(naive_working(run))
    _, c = curation.undo(run)
    assert c.working == base and c.edits == curation.Edits()
    with pytest.raises(CurationError, match="nothing to undo"):
        curation.undo(run)
    curation.edit(run, remove=base[:5])
    assert curation.reset(run).working == base == curation.working_selection(run).working


def test_exclude_a_source_a_domain_and_a_cluster(run):
    lay = RunLayout(run)
    ex = pd.read_parquet(lay.examples)
    base = curation.read_run(run).base
    math_rows = [int(i.split("-")[1]) for i in base[:4]]
    ex.loc[math_rows, "prompt"] = [f"Calculate the total: 3 + {i} = {3 + i}" for i in range(4)]
    ex.to_parquet(lay.examples, index=False)
    c = curation.edit(run, exclude=["domain=math"], view="domain math")
    assert c.edits.ops[-1].group == ("domain", "math") and set(base[:4]) <= set(c.edits.ops[-1].ids)
    assert set(c.working) == set(base[4:])
    sources = dict(zip(ex["id"], ex["source"]))
    c = curation.edit(run, exclude=["source=synthetic-list"], view="source synthetic-list")
    assert c.edits.ops[-1].ids == tuple(i for i in pool_ids(run) if sources[i] == "synthetic-list")
    assert all(sources[i] != "synthetic-list" for i in c.working) and list(c.working) == naive_working(run)

    rows = np.arange(0, 300, 2)  # the clustered sample: every other row
    save_npy(lay.clusters_array("rows"), rows, np.int64)
    save_npy(lay.clusters_array("labels-gradientspace"), rows % 3, np.int64)
    c = curation.edit(run, exclude=["cluster=c2"], view="cluster 2")
    assert c.edits.ops[-1].ids == tuple(f"pool-{r:06d}" for r in rows if r % 3 == 2)
    with pytest.raises(CurationError, match=r"no elrea clusters .*gist-lab cluster"):
        curation.edit(run, exclude=["cluster:elrea=1"])
    save_npy(lay.clusters_array("rows"), rows + 200, np.int64)  # another run's clusters: rows past this pool
    with pytest.raises(StoreError, match=r"rows outside the pool of 300 .*gist-lab cluster --run"):
        curation.edit(run, exclude=["cluster=1"])
    with pytest.raises(CurationError, match=r"no pool row has kind=right \(values: correct, distractor, wrong\)"):
        curation.edit(run, exclude=["kind=right"])


def test_an_exclusion_then_an_add_in_one_call_keeps_the_added_row(run):
    base = curation.read_run(run).base
    c = curation.edit(run, exclude=["source=synthetic-list", "source=synthetic-word"], add=[base[0]])
    assert [o.action for o in c.edits.ops] == ["exclude", "exclude", "add"] and c.working == (base[0],)


def test_unknown_ids_write_nothing(run):
    with pytest.raises(CurationError, match=r"2 row id\(s\) not in this run's pool: 'nope', 'pool-999999'"):
        curation.edit(run, remove=["pool-000001", "nope", "pool-999999"])
    with pytest.raises(CurationError, match="no edit given"):
        curation.edit(run)
    assert not RunLayout(run).curation_dir.exists()


def test_stored_edits_for_another_pool_say_how_to_start_over(run):
    curation.save_edits(run, curation.Edits((Op("add", ("gone-1",), "cli", AT),)))
    with pytest.raises(CurationError, match=r"edits.json: edit 1 \(add from cli\).*'gone-1'.*--reset"):
        curation.working_selection(run)
    assert curation.reset(run).working == curation.read_run(run).base


def test_a_rerun_that_changes_the_method_selection_is_noticed(run):
    curation.edit(run, remove=[method_ids(run)[0]])
    lay = RunLayout(run)
    sc = pd.read_parquet(lay.scores)
    sc.loc[sc["id"] == "pool-000299", "selected_global"] = True
    sc.to_parquet(lay.scores, index=False)
    c = curation.working_selection(run)
    assert c.base_changed and "pool-000299" in c.working


def test_a_second_writer_is_refused_and_nothing_is_written(run):
    curation.edit(run, remove=[method_ids(run)[0]])
    before = RunLayout(run).curation_edits.read_bytes()
    code = ("import sys, time\nfrom gist_core.store.lock import writer_lock\n"
            f"with writer_lock({str(run)!r}, cmd=['gist-lab', 'select']):\n    print('held', flush=True)\n"
            "    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"being written by pid {holder.pid} \(gist-lab select\)"):
            curation.edit(run, remove=[method_ids(run)[1]])
        with pytest.raises(RunLockedError):
            curation.undo(run)
        with pytest.raises(RunLockedError):
            curation.reset(run)
    finally:
        holder.kill()
        holder.wait()
    assert RunLayout(run).curation_edits.read_bytes() == before
    assert curation.edit(run, remove=[method_ids(run)[1]]).counts["edits"] == 2  # free again


def test_a_failed_write_leaves_the_old_edits(run, monkeypatch):
    curation.edit(run, remove=[method_ids(run)[0]])
    before = RunLayout(run).curation_edits.read_bytes()

    def no_rename(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("gist_core.store.atomic.os.replace", no_rename)
    with pytest.raises(OSError):
        curation.edit(run, add=["pool-000000"])
    assert RunLayout(run).curation_edits.read_bytes() == before
    assert [p.name for p in RunLayout(run).curation_dir.iterdir()] == ["edits.json"]


def test_missing_or_unfinished_run_folders(tmp_path):
    with pytest.raises(StoreError, match="no such run folder"):
        curation.working_selection(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(StoreError, match=r"half: no scores.parquet"):
        curation.edit(tmp_path / "half", add=["x"])
    assert not (tmp_path / "nope").exists()


def test_take_makes_given_rows_the_working_selection_as_two_ordinary_edits(run):
    ids = pool_ids(run)
    curation.edit(run, remove=method_ids(run)[:2], view="map lasso")
    wanted = ids[100:110] + method_ids(run)[5:8]  # some new rows and three of the method's
    before = set(naive_working(run))
    c = curation.take(run, list(reversed(wanted)), view=curation.selection_view(2, "global", len(wanted)))
    assert naive_working(run) == [i for i in ids if i in set(wanted)] == list(c.working)
    ops = json.loads(RunLayout(run).curation_edits.read_text())["ops"]
    assert [o["action"] for o in ops] == ["remove", "remove", "add"]
    assert set(ops[1]["ids"]) == before - set(wanted) and set(ops[2]["ids"]) == set(wanted) - before
    assert ops[2]["view"] == ops[1]["view"] == "rank r=2 selection (global, 13 rows)"
    with pytest.raises(CurationError, match="already is these 13 rows"):
        curation.take(run, wanted, view="again")
    curation.undo(run)
    curation.undo(run)  # the take undone, edit by edit
    assert set(naive_working(run)) == before
    with pytest.raises(CurationError, match="not in this run's pool"):
        curation.take(run, ["pool-999999"], view="x")
