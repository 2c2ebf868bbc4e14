"""`gist-lab curate` and `gist-lab export` from the shell: what they print, their bad-input paths (one line on
stderr, exit 2, nothing written), and every command docs/guide/curation.md shows, run in order."""
from __future__ import annotations

import hashlib
import json
import shlex
import shutil

import numpy as np
import pandas as pd
import pytest
from fake_run import make_fake_run
from repo import ROOT
from test_docs import _gist_lab_commands, _shell_lines

from gist_core.cli import main as cli_main
from gist_core.methods.gist import rescore as gist_rescore
from gist_core.store.layout import RunLayout

GUIDE = ROOT / "docs" / "guide" / "curation.md"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A synthetic run whose first selected rows read as maths (the guide excludes domain=math)."""
    run = make_fake_run(tmp_path_factory.mktemp("cli-curation") / "runs" / "my-run", n_pool=300, n_val=8, r=4)
    lay = RunLayout(run)
    ex = pd.read_parquet(lay.examples)
    chosen = pd.read_parquet(lay.scores).query("selected_global").index[:3]
    ex.loc[chosen, "prompt"] = [f"Calculate 12 * {i} = {12 * i}, then add 3." for i in range(3)]
    ex.to_parquet(lay.examples, index=False)
    return run


@pytest.fixture
def run(built, tmp_path, monkeypatch):
    """A private copy at ./runs/my-run, the working directory being its parent's parent."""
    shutil.copytree(built, tmp_path / "runs" / "my-run")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "runs" / "my-run"


def method_ids(run) -> list[str]:
    return [json.loads(x)["id"] for x in RunLayout(run).selected.read_text().splitlines()]


def snapshot(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def fails(argv, message, capsys, folder) -> None:
    before = snapshot(folder)
    capsys.readouterr()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err, err
    assert len(err.splitlines()) == 1, err
    assert snapshot(folder) == before


def test_curate_edits_shows_and_prints_ids(run, capsys):
    base = method_ids(run)
    assert cli_main(["curate", "--run", str(run), "--remove", base[0], base[1], "--add", "pool-000000",
                     "--from-view", "map lasso"]) == 0
    out = capsys.readouterr().out
    assert "recorded: remove 2 row(s) from map lasso" in out and "recorded: add 1 row(s) from map lasso" in out
    assert "working selection 14 rows (+1 added, -2 removed) after 2 edit(s)" in out
    assert cli_main(["curate", "--run", str(run), "--ids"]) == 0
    got = capsys.readouterr()
    assert got.out.split() == [i for i in pd.read_parquet(RunLayout(run).scores)["id"]
                               if i in (set(base[2:]) | {"pool-000000"})]
    assert "working selection 14 rows" in got.err  # with --ids the summary goes to stderr
    assert cli_main(["curate", "--run", str(run), "--undo"]) == 0
    assert "undone: add 1 row(s)" in capsys.readouterr().out
    assert cli_main(["curate", "--run", str(run), "--reset"]) == 0
    assert "working selection 15 rows (+0 added, -0 removed) after 0 edit(s)" in capsys.readouterr().out


def test_export_writes_the_file_and_its_provenance(run, tmp_path, capsys):
    assert cli_main(["curate", "--run", str(run), "--remove", method_ids(run)[0]]) == 0
    out = tmp_path / "train.jsonl"
    assert cli_main(["export", "--run", str(run), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert f"{out}: 14 rows (rows, pool order)" in printed.out and "provenance:" in printed.out
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == method_ids(run)[1:]
    rec = json.loads((tmp_path / "train.jsonl.provenance.json").read_text())
    assert rec["ids"] == method_ids(run)[1:] and len(rec["edits"]) == 1
    assert cli_main(["export", "--run", str(run), "--format", "messages", "--out", str(tmp_path / "m.jsonl"),
                     "--rows", "pool-000007", "pool-000003"]) == 0
    msgs = [json.loads(x)["messages"] for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    ex = pd.read_parquet(RunLayout(run).examples).set_index("id")
    assert msgs == [[{"role": "user", "content": ex.loc[i, "prompt"]}, {"role": "assistant", "content": ex.loc[i, "response"]}]
                    for i in ("pool-000003", "pool-000007")]


def naive_selection_at(run, rank: int, k: int) -> list[str]:
    """The global top-k at `rank` through the pipeline's own rescore (the stored basis, not the dashboard's cached
    arrays), ties by pool position, in pool order."""
    score = gist_rescore.rescore(run, rank).score
    ids = pd.read_parquet(RunLayout(run).scores, columns=["id"])["id"].tolist()
    top = set(np.lexsort((np.arange(len(score)), -score))[:k].tolist())
    return [i for n, i in enumerate(ids) if n in top]


def test_take_rank_makes_the_dashboards_rank_selection_the_working_selection(run, capsys):
    base = method_ids(run)
    assert cli_main(["curate", "--run", str(run), "--remove", base[0]]) == 0
    capsys.readouterr()
    assert cli_main(["curate", "--run", str(run), "--take-rank", "2", "--ids"]) == 0
    got = capsys.readouterr()
    want = naive_selection_at(run, 2, 15)
    assert got.out.split() == want and set(want) != set(base)
    assert want != pd.read_parquet(RunLayout(run).scores)["id"].tolist()[:15]  # not a tie broken by position
    view = "rank r=2 selection (global, subspace score, 15 rows)"  # the fake run stores no norms: subspace
    assert f"recorded: remove {len(set(base[1:]) - set(want))} row(s) from {view}" in got.err
    assert f"recorded: add {len(set(want) - set(base[1:]))} row(s) from {view}" in got.err
    ops = json.loads(RunLayout(run).curation_edits.read_text())["ops"]
    assert [(o["action"], o["view"]) for o in ops] == [("remove", "cli"), ("remove", view), ("add", view)]
    assert cli_main(["curate", "--run", str(run), "--take-rank", "3", "--budget", "30", "--rule", "global",
                     "--ids"]) == 0
    assert capsys.readouterr().out.split() == naive_selection_at(run, 3, 30)
    for argv, message in [(["--take-rank", "3", "--budget", "30"], "already is these 30 rows"),
                          (["--take-rank", "9"], "the run stores ranks 1..4"),
                          (["--take-rank", "2", "--budget", "1.5"], "--budget 1.5"),
                          (["--rule", "subtask"], "go with --take-rank"),
                          (["--take-rank", "2", "--undo"], "go in separate commands")]:
        fails(["curate", "--run", str(run), *argv], message, capsys, run)


def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys):
    base = method_ids(run)
    out = tmp_path / "train.jsonl"
    out.write_text("mine\n")
    missing = str(tmp_path / "runs" / "nope")
    for argv, message in [
        (["curate", "--run", missing], "runs/nope: no such run folder"),
        (["curate", "--run", missing, "--add", "pool-000001"], "no such run folder"),
        (["export", "--run", missing, "--out", str(tmp_path / "x.jsonl")], "no such run folder"),
        (["curate", "--run", str(run), "--add", "pool-000001", "ghost", "pool-9"],
         "2 row id(s) not in this run's pool: 'ghost', 'pool-9'"),
        (["export", "--run", str(run), "--out", str(tmp_path / "x.jsonl"), "--rows", "pool-000001", "ghost"],
         "1 row id(s) not in this run's pool: 'ghost'"),
        (["export", "--run", str(run), "--out", str(out)], "train.jsonl exists; pass --overwrite to replace it"),
        (["export", "--run", str(run), "--out", str(run / "x.jsonl")], "inside the run folder"),
        (["curate", "--run", str(run), "--exclude", "domain"], "write KEY=VALUE"),
        (["curate", "--run", str(run), "--exclude", "colour=red"], "unknown key 'colour'"),
        (["curate", "--run", str(run), "--exclude", "domain=maths"], "no pool row has domain=maths (values: math, other)"),
        (["curate", "--run", str(run), "--undo"], "nothing to undo"),
        (["curate", "--run", str(run), "--undo", "--remove", base[0]], "go in separate commands"),
        (["curate", "--run", str(tmp_path), "--reset"], "no scores.parquet"),
    ]:
        fails(argv, message, capsys, tmp_path)
    assert out.read_text() == "mine\n" and not (tmp_path / "runs" / "nope").exists()


def guide_commands() -> list[list[str]]:
    return [args for _, line in _shell_lines(GUIDE) for args in _gist_lab_commands(line)]


def test_the_guides_commands_run_in_order(run, tmp_path, capsys):
    """Every `gist-lab` line of docs/guide/curation.md, on a run at runs/my-run, in the order the page shows them."""
    commands = guide_commands()
    assert {a[0] for a in commands} == {"curate", "export"} and len(commands) >= 8
    for args in commands:
        assert cli_main(args) == 0, shlex.join(args) + "\n" + capsys.readouterr().err
    for name in ("train.jsonl", "train-chat.jsonl", "lasso.jsonl"):
        assert (tmp_path / name).is_file() and (tmp_path / f"{name}.provenance.json").is_file()
