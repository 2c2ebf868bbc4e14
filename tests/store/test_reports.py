"""The run folder's JSON reports: kind and version written by every runner, read back checked."""
import json

import pytest

from gist_core.errors import StoreError
from gist_core.store.reports import REPORT_VERSIONS, check_report, read_report, stamp


def test_stamp_puts_kind_and_version_first_and_round_trips(tmp_path):
    rep = stamp("compare", {"methods": {"gist_global": {"precision": 0.5}}})
    assert list(rep)[:2] == ["report", "version"] and rep["version"] == REPORT_VERSIONS["compare"]
    (tmp_path / "c.json").write_text(json.dumps(rep))
    assert read_report(tmp_path / "c.json", "compare") == rep


def test_a_report_written_before_versions_reads_as_version_0(tmp_path):
    (tmp_path / "g.json").write_text(json.dumps({"checkpoints": {}}))
    assert read_report(tmp_path / "g.json", "geometry") == {"checkpoints": {}}


@pytest.mark.parametrize("rep, message", [
    ({"report": "compare", "version": 1}, "a 'compare' report where a 'summary' report belongs"),
    ({"report": "summary", "version": 99}, "summary report version 99 is newer than this gist-lab reads"),
    ([1, 2], "not a JSON object"),
])
def test_wrong_kind_newer_version_or_shape_is_one_line(rep, message):
    with pytest.raises(StoreError, match=message):
        check_report(rep, "summary")


def test_missing_is_none_and_broken_json_names_the_file(tmp_path):
    assert read_report(tmp_path / "absent.json", "summary") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(StoreError, match="bad.json: not valid JSON"):
        read_report(tmp_path / "bad.json", "summary")


def test_a_real_select_writes_a_versioned_summary(micro_model_dir, micro_corpus, tmp_path):
    from gist_core import RunConfig, run_select
    out = tmp_path / "run"
    cfg = RunConfig(model=str(micro_model_dir), train=str(micro_corpus["pool"]), target=str(micro_corpus["val"]),
                    budget=0.1, rank=3, r_max=4)
    summary = run_select(cfg, out, quiet=True)
    stored = read_report(out / "summary.json", "summary")
    assert stored == json.loads(json.dumps(summary)) and stored["report"] == "summary" and stored["version"] == 1
    assert stored["n_selected"] == round(0.1 * stored["n_pool"])


def test_the_dashboard_reads_only_reports_it_understands(tmp_path):
    from gist_core.store.reports import readable_report
    from gist_core.viewer import compare
    assert readable_report({"report": "geometry", "version": 1}, "compare") is None
    assert readable_report(None, "compare") is None
    rep = {"report": "compare", "version": 99, "methods": {"gist_global": {"precision": 0.5}}}
    (tmp_path / "compare.json").write_text(json.dumps(rep))
    assert compare.load_compare(tmp_path) is None  # a newer version is not misread
    (tmp_path / "compare.json").write_text(json.dumps({**rep, "version": 1}))
    assert compare.load_compare(tmp_path)["methods"]["gist_global"]["precision"] == 0.5
