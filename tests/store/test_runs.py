"""Run names and uploaded file names cannot leave the runs folder (gist_core.store.runs; no torch, no streamlit)."""
from __future__ import annotations

from pathlib import Path

import pytest

from gist_core.errors import RunNameError
from gist_core.store.runs import NAME_RULE, check_run_name, run_path, runs_root, safe_upload_name, upload_path

BAD_NAMES = ["../x", "..", ".", "/etc", "/", "a/b", "a\\b", ".hidden", "", "x" * 101, "name with space", "tab\tname",
             "new\nline", "nul\0byte", "~", "~user", "café", "run*", "$HOME", "a:b", None, 3]
GOOD_NAMES = ["my-run", "demo-transform-quick", "run_1.2", "A", "x" * 100, "1", "a..b", "trailing."]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_run_names_are_refused_with_one_line(name, tmp_path):
    with pytest.raises(RunNameError) as e:
        check_run_name(name)
    msg = str(e.value)
    assert "\n" not in msg and NAME_RULE in msg and len(msg) < 200
    assert isinstance(e.value, ValueError)
    with pytest.raises(RunNameError):
        run_path(name, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing created


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_run_names(name, tmp_path):
    assert check_run_name(name) == name
    assert run_path(name, tmp_path) == tmp_path / name
    assert run_path(name, tmp_path).resolve().parent == tmp_path.resolve()


def test_run_path_defaults_to_runs_root(monkeypatch, tmp_path):
    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path / "r"))
    assert runs_root() == tmp_path / "r" and run_path("x") == tmp_path / "r" / "x"
    monkeypatch.delenv("GIST_LAB_RUNS")
    assert run_path("x") == Path("runs") / "x"


def test_relative_root_and_symlinked_root_are_fine(tmp_path, monkeypatch):
    real = tmp_path / "real-runs"
    real.mkdir()
    (tmp_path / "link-runs").symlink_to(real)
    assert run_path("r", tmp_path / "link-runs") == tmp_path / "link-runs" / "r"  # the root itself may be a link
    monkeypatch.chdir(tmp_path)
    assert run_path("r", "real-runs") == Path("real-runs") / "r"


def test_symlinked_run_folder_pointing_outside_is_refused(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "evil").symlink_to(outside)
    (root / "alias").symlink_to(root / "real")  # a link that stays inside is fine
    with pytest.raises(RunNameError, match="outside"):
        run_path("evil", root)
    with pytest.raises(RunNameError):
        upload_path("evil", "pool.jsonl", root)
    assert run_path("alias", root) == root / "alias"


@pytest.mark.parametrize("filename, safe", [
    ("pool.jsonl", "pool.jsonl"),
    ("../../evil.jsonl", "evil.jsonl"),
    ("/etc/passwd", "passwd"),
    ("C:\\Users\\me\\data.csv", "data.csv"),
    ("..\\..\\evil.parquet", "evil.parquet"),
    ("my data (1).json", "my_data__1_.json"),
    ("données.jsonl", "donn_es.jsonl"),
    ("a\0b.jsonl", "a_b.jsonl"),
    (".hidden.jsonl", ".hidden.jsonl"),
    ("~", "_"),
])
def test_safe_upload_name(filename, safe):
    assert safe_upload_name(filename) == safe


@pytest.mark.parametrize("filename", ["", ".", "..", "...", "a/..", "x/", "dir\\..", None])
def test_unusable_upload_names_are_refused(filename):
    with pytest.raises(RunNameError, match="upload file name"):
        safe_upload_name(filename)


def test_long_upload_name_keeps_its_extension():
    safe = safe_upload_name("x" * 300 + ".parquet")
    assert safe.endswith(".parquet") and len(safe) <= 150


def test_upload_path_stays_in_the_run_inputs(tmp_path):
    root = tmp_path / "runs"
    p = upload_path("my-run", "../../evil.jsonl", root)
    assert p == root / "my-run" / "inputs" / "evil.jsonl"
    assert p.resolve().parent == (root / "my-run" / "inputs").resolve()
    with pytest.raises(RunNameError):
        upload_path("../x", "pool.jsonl", root)
    assert not root.exists()  # computing a path creates nothing


def test_upload_path_refuses_symlinked_inputs_or_file(tmp_path):
    root, outside = tmp_path / "runs", tmp_path / "outside"
    outside.mkdir()
    (root / "r").mkdir(parents=True)
    (root / "r" / "inputs").symlink_to(outside)
    with pytest.raises(RunNameError, match="outside"):
        upload_path("r", "pool.jsonl", root)
    (root / "r" / "inputs").unlink()
    (root / "r" / "inputs").mkdir()
    (root / "r" / "inputs" / "pool.jsonl").symlink_to(outside / "pool.jsonl")
    with pytest.raises(RunNameError, match="outside"):
        upload_path("r", "pool.jsonl", root)

