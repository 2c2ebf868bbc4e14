"""gist_core/viewer/rundir.py's cache-key parts: the dashboard's one cached loader (gist_core/app/ui.py's
folder_view) is only as fresh as these stamps."""
from __future__ import annotations

import os
import shutil

from gist_core.viewer import rundir


def _write(path, text: str, ns: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if ns is not None:
        os.utime(path, ns=(ns, ns))
    return path


def test_tree_stamp_changes_with_any_json_anywhere_under_the_folder(tmp_path):
    assert rundir.tree_stamp(tmp_path) == 0  # nothing written yet
    report = _write(tmp_path / "clusters" / "report.json", "{}", 1_000_000_000)
    (tmp_path / "labels.npy").write_bytes(b"x")  # not a report: arrays come with a report written after them
    first = rundir.tree_stamp(tmp_path)
    assert first != 0 and rundir.tree_stamp(tmp_path) == first  # the same files: the same key
    (tmp_path / "labels.npy").write_bytes(b"xy")
    assert rundir.tree_stamp(tmp_path) == first  # only JSON files count
    _write(report, '{"k": 2}')  # a rerun rewrites the nested report: the key must change
    assert rundir.tree_stamp(tmp_path) != first


def test_tree_stamp_is_stronger_than_the_manifest_stamp_and_the_newest_mtime(tmp_path):
    """Every change the manifest's own stamp (rundir.stamp) sees, tree_stamp sees; and what the newest mtime alone
    would miss: an older file replaced by an older copy, a report moved aside, a manifest older than a report."""
    manifest = _write(tmp_path / "manifest.json", "{}", 2_000_000_000)
    report = _write(tmp_path / "summary.json", "{}", 9_000_000_000)  # newer than any manifest write below
    keys = [rundir.tree_stamp(tmp_path)]
    old_stamp = rundir.stamp(tmp_path)
    _write(manifest, '{"stages": {}}', 3_000_000_000)  # the manifest rewritten, still older than the report
    assert rundir.stamp(tmp_path) != old_stamp
    keys.append(rundir.tree_stamp(tmp_path))
    _write(manifest, '{"stages": {}}', 1_000_000_000)  # replaced by an older copy
    keys.append(rundir.tree_stamp(tmp_path))
    (tmp_path / ".previous").mkdir()
    shutil.move(report, tmp_path / ".previous" / report.name)  # moved aside, its mtime kept
    keys.append(rundir.tree_stamp(tmp_path))
    manifest.unlink()
    keys.append(rundir.tree_stamp(tmp_path))
    assert len(set(keys)) == len(keys), keys


def test_file_stamp_of_a_missing_file_is_zero(tmp_path):
    assert rundir.file_stamp(tmp_path / "gone.json") == 0
