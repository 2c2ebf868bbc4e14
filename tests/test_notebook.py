"""notebooks/walkthrough.ipynb: stored without outputs (fast), and executed top to bottom with nbclient (slow:
a real selection, geometry, compare and GradientSpace clusters and experts on the bundled tiny model, a few
minutes on 2 CPU cores)."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "notebooks" / "walkthrough.ipynb"
TIMEOUT_S = 600  # per cell, so a hung cell fails; how long the whole notebook takes is no pass/fail matter


def _load(path: Path = NOTEBOOK):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(path, as_version=4)


def _tagged(nb, tag: str):
    return next(c for c in nb.cells if tag in c.metadata.get("tags", []))


def _text(cell) -> str:
    """Every text/plain and text/html output of a code cell, joined."""
    parts = []
    for out in cell.get("outputs", []):
        data = out.get("data", {})
        parts += [data.get("text/plain", ""), data.get("text/html", ""), out.get("text", "")]
    return "\n".join(parts)


def test_stored_notebook_has_no_outputs_and_matches_its_generator():
    nb = _load()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 15
    for c in code:
        assert c.outputs == [] and c.execution_count is None, c.source[:60]
    assert nb.metadata["kernelspec"]["name"] == "python3"
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert [h.split(". ", 1)[0] for h in headings] == [f"## {i}" for i in range(1, 12)]
    src = "\n".join(c.source for c in code)
    for name in ("run_select", "rescore", "demo_config", "run_geometry", "GeometryConfig", "run_compare",
                 "CompareConfig", "RunConfig", "IntSlider", "interact", "_figures.", "rescore_view.", "run_cluster",
                 "ClusterConfig", "run_experts", "ExpertConfig", "clusters.", "run_ablation",
                 "TrainRunConfig", "layers.", "run_proxy", "ProxyConfig", "proxy."):
        assert name in src, name
    assert "downstream=False" in src and "GIST_LAB_RUNS" in src
    spec = importlib.util.spec_from_file_location("build_walkthrough", ROOT / "notebooks" / "build_walkthrough.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render() == NOTEBOOK.read_text(), "rerun `python notebooks/build_walkthrough.py`"


@pytest.mark.slow
def test_walkthrough_executes_top_to_bottom(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient
    runs = tmp_path / "runs"
    monkeypatch.setenv("GIST_LAB_RUNS", str(runs))  # the kernel inherits it: nothing written outside tmp_path
    nb = _load()
    NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    (tmp_path / "executed.ipynb").write_text(json.dumps(nb))  # for a look when something is off
    run = runs / "notebook-transform"
    assert (run / "summary.json").is_file() and (run / "geometry" / "geometry.json").is_file()
    assert (run / "compare.json").is_file()
    assert (run / "clusters" / "clusters.json").is_file() and (run / "experts" / "experts.json").is_file()
    assert (runs / "notebook-gast" / "ablation.json").is_file()
    assert (runs / "notebook-proxy" / "proxy.json").is_file() and (runs / "notebook-proxy" / "model" / "iprox.json").is_file()

    summary = json.loads((run / "summary.json").read_text())
    shown = _text(_tagged(nb, "summary"))
    assert "precision" in shown and f"{summary['precision']:.3f}"[:4] in shown  # the summary cell shows the number

    table = _text(_tagged(nb, "rank-table"))  # the static loop over ranks: one precision per rank
    assert "precision" in table and "coverage" in table
    ranks = re.findall(r"^\s*(\d+)\s+(0\.\d+|1\.0+)\s+(0\.\d+)", table, re.M)
    assert len(ranks) >= 4 and len({p for _, p, _ in ranks}) > 1, table  # precision changes with the rank
    assert all(0 <= float(p) <= 1 for _, p, _ in ranks)

    assert "kind" in _text(_tagged(nb, "selection")) and "offdiag_hessian" in _text(_tagged(nb, "geometry"))
    cmp_text = _text(_tagged(nb, "compare"))
    assert "less" in cmp_text and "gist" in cmp_text and "test_loss" not in cmp_text  # no downstream columns
    figs = [c for c in nb.cells if c.cell_type == "code"
            and any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in c.outputs)]
    assert "ARI" in _text(_tagged(nb, "clusters")) and "elrea-ensemble" not in _text(_tagged(nb, "clusters"))
    experts = _text(_tagged(nb, "experts"))
    assert "router accuracy" in experts and "one LoRA on everything" in experts and "ELREA ensemble" in experts
    gast = _text(_tagged(nb, "gast"))
    assert "plain LoRA" in gast and "GAST" in gast and "test loss" in gast
    shown = _text(_tagged(nb, "proxy"))
    assert "gist Spearman" in shown and "rho-0.7" in shown and "plain SVD" in shown
    # spectrum x2, histograms x2, map, curvature heatmap, precision, cost, composition, confusion, GAST frequency,
    # the proxy's ρ sweep and stage-2 curve
    assert len(figs) == 13
