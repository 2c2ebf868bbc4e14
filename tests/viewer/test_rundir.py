"""gist_core/viewer/rundir.py's cache-key parts: the dashboard's cached loaders (gist_core/app/ui.py) are only as
fresh as these stamps."""
from __future__ import annotations

import os

from gist_core.viewer import rundir


def test_tree_stamp_follows_the_newest_json_anywhere_under_the_folder(tmp_path):
    assert rundir.tree_stamp(tmp_path) == 0  # nothing written yet
    (tmp_path / "clusters").mkdir()
    report = tmp_path / "clusters" / "report.json"
    report.write_text("{}")
    os.utime(report, ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "labels.npy").write_bytes(b"x")  # not a report: arrays come with a report written after them
    first = rundir.tree_stamp(tmp_path)
    assert first == 1_000_000_000
    report.write_text('{"k": 2}')  # a rerun rewrites the nested report: the key must change
    assert rundir.tree_stamp(tmp_path) > first


def test_file_stamp_of_a_missing_file_is_zero(tmp_path):
    assert rundir.file_stamp(tmp_path / "gone.json") == 0
