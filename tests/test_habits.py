"""The codebase's habits, checked: ruff passes, modules stay small, run-folder paths live in the store layout
module only, the library logs instead of printing, and the pages draw through the shared figures module."""
import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gist_core"
LAYOUT = PACKAGE / "store" / "layout.py"
MAX_LINES = 420  # "no module over ~400 lines"
# every file name a run folder holds (gist_core/store/layout.py is their one home)
RUN_FILES = ("config.json", "manifest.json", "progress.jsonl", "summary.json", "examples.parquet", "target.parquet",
             "train_proj.npy", "scores.parquet", "selected.jsonl", "advisor.json", "compare.json", "geometry.json",
             "subspace.safetensors", "val_grads.npy", "launch.json", "optimizer_moments.safetensors", "embed.npy")
PATH_LIKE = re.compile(r"^[\w.{}/*-]*(" + "|".join(re.escape(f) for f in RUN_FILES) + r")$")


def _sources(*roots: Path):
    for root in roots:
        yield from (sorted(root.rglob("*.py")) if root.is_dir() else [root])


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def test_ruff_passes():
    ruff = shutil.which("ruff") or pytest.fail("ruff is in the test extras: pip install -e '.[test]'")
    res = subprocess.run([ruff, "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


def test_no_module_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in _sources(PACKAGE, ROOT / "pages", ROOT / "app.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules along their seams: {long}"


def test_run_folder_paths_are_spelled_in_the_layout_module_only():
    found = []
    for path in _sources(PACKAGE, ROOT / "pages", ROOT / "app.py"):
        if path == LAYOUT:
            continue
        text = path.read_text()
        tree, lines = ast.parse(text), text.splitlines()
        skip = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if PATH_LIKE.match(node.value) and "not a run folder" not in lines[node.lineno - 1]:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "use gist_core.store.layout instead:\n" + "\n".join(found)


def test_the_layout_check_would_catch_a_spelled_path(tmp_path):
    """The check above is not vacuous: the pattern matches what a stray path looks like."""
    for literal in ("config.json", "checkpoints/ckpt-1/subspace.safetensors", "compare/embed.npy"):
        assert PATH_LIKE.match(literal)
    assert not PATH_LIKE.match("replay a run's config.json")  # prose (help text) is not a path


def test_pages_draw_through_the_shared_figures_module():
    for page in sorted((ROOT / "pages").glob("*.py")):
        text = page.read_text()
        assert not re.search(r"^\s*(import plotly|from plotly)|\bgo\.[A-Z]", text, re.M), \
            f"{page.name}: build charts in gist_core.viewer.figures, not in the page"
        assert "figures." in text or "chart" not in text, page.name


def test_importing_the_package_stays_light():
    """`import gist_core` (and the CLI's parser) must not pull torch: the dashboard and `--help` stay fast."""
    code = "import sys, gist_core, gist_core.config, gist_core.store.layout; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.strip() == "False", out.stderr
