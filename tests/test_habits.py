"""The codebase's habits, checked: ruff passes, modules stay small without mixins, imports follow the layers and
form no cycle, every deferred import says why, run-folder paths live in the store layout module only, the pages
draw through figure modules."""
import ast
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gist_core"
LAYOUT = PACKAGE / "store" / "layout.py"
MAX_LINES = 450  # no module over 450 lines: split along seams, never by inheritance (test_no_mixins)
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


def test_no_module_is_over_450_lines():
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


# ----------------------------------------------------------------------------- the import graph
# store -> data -> grads -> methods (math) -> model -> runner and the methods' stages -> viewer and the methods'
# views and figures -> app, cli and the methods' commands: a module imports its own layer or lower ones only.
ORCHESTRATION = ("stages", "trainer", "report", "rescore")   # methods/<name>/<module>: a stage, beside the runner


def layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    if top in ("", "errors", "log", "wheels", "memory", "flags"):
        return 0
    if top in ("methods", "config"):
        leaf = parts[3] if len(parts) > 3 else ""
        if leaf == "cli":
            return 8
        if leaf in ("view", "figures"):
            return 7
        return 6 if leaf in ORCHESTRATION or leaf.endswith("_stage") else 4
    return {"store": 1, "data": 2, "grads": 3, "analysis": 3, "model": 5, "runner": 6, "viewer": 7,
            "app": 8, "cli": 8}[top]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    return {id(n) for node in tree.body if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for n in ast.walk(node)}


def import_edges(root: Path = PACKAGE) -> list[tuple[str, str, bool]]:
    """(importer, imported gist_core module, at module level) for every import in the package."""
    modules = {_module_name(p) for p in root.rglob("*.py")}
    edges = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        top, typing_only = {id(n) for n in tree.body}, _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gist_core"):
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("gist_core")]
            else:
                continue
            for name in names:
                if name in modules:
                    edges.append((_module_name(path), name, id(node) in top))
    return edges


def upward(edges) -> list[str]:
    return [f"{a} ({layer(a)}) imports {b} ({layer(b)})" for a, b, _ in edges if layer(b) > layer(a)]


def cycles(edges) -> list[list[str]]:
    """Strongly connected components of more than one module in the module-level import graph (Tarjan)."""
    graph: dict[str, set[str]] = {}
    for a, b, at_top in edges:
        if at_top and a != b and not a.startswith(b + "."):  # a package's __init__ is imported on the way: no edge
            graph.setdefault(a, set()).add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_follow_the_layers():
    assert not upward(import_edges()), "an import against the layers (docs/design.md):\n" + "\n".join(upward(import_edges()))


def test_no_import_cycle():
    assert not cycles(import_edges()), f"import cycles: {cycles(import_edges())}"


def test_the_import_checks_would_catch_an_upward_import_and_a_cycle():
    assert upward([("gist_core.store.layout", "gist_core.runner.pipeline", False)])
    assert upward([("gist_core.methods.gist.subspace", "gist_core.methods.gist.stages", True)])
    assert not upward([("gist_core.methods.gist.stages", "gist_core.runner.context", True)])
    assert cycles([("gist_core.a", "gist_core.b", True), ("gist_core.b", "gist_core.a", True)])
    assert not cycles([("gist_core.a", "gist_core.b", True), ("gist_core.b", "gist_core.a", False)])


# ----------------------------------------------------------------------------- deferred imports
# An import inside a function hides an edge of the import graph: each one says why it is deferred, with
# "# lazy: <reason>" on its line or on the line directly above (docs/contributing.md).
LAZY = re.compile(r"#\s*lazy:\s*\S")


def unmarked_lazy_imports(source: str, name: str = "<source>") -> list[str]:
    """The function-local imports of `source` with no '# lazy: <reason>' on their line or the line above."""
    lines = source.splitlines()
    found, seen = [], set()
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                seen.add(id(node))
                here = lines[node.lineno - 1]
                above = lines[node.lineno - 2].strip() if node.lineno > 1 else ""
                if not LAZY.search(here) and not (above.startswith("#") and LAZY.match(above)):
                    found.append((node.lineno, f"{name}:{node.lineno}: {ast.unparse(node)}"))
    return [line for _, line in sorted(found)]


def test_every_deferred_import_says_why():
    found = [line for path in _sources(PACKAGE, ROOT / "bench", ROOT / "pages", ROOT / "app.py")
             for line in unmarked_lazy_imports(path.read_text(), str(path.relative_to(ROOT)))]
    assert not found, ("import these at the top of the module, or say why not with '# lazy: <reason>' on the line "
                       "or the line above (docs/contributing.md):\n" + "\n".join(found))


def test_the_deferred_import_check_would_catch_an_unmarked_one():
    source = textwrap.dedent("""\
        import json


        def plain():
            import torch
            return torch, json


        def marked():
            import torch  # lazy: torch; the CLI parses its flags without it
            return torch


        def marked_above():
            # lazy: torch; the dashboard imports this module
            from torch import nn
            return nn


        class Model:
            def method(self):
                def inner():
                    from peft import PeftModel
                    return PeftModel
                return inner


        def no_reason():
            import sklearn  # lazy:
            return sklearn
        """)
    assert unmarked_lazy_imports(source) == ["<source>:5: import torch", "<source>:23: from peft import PeftModel",
                                             "<source>:29: import sklearn"]
    assert not unmarked_lazy_imports("import torch\n\n\ndef f():\n    return torch\n")


def test_no_mixins():
    """Stages share state through an explicit context, not through base classes: a class has at most one base
    (an error subclasses its base error and a builtin; typing helpers are not behaviour)."""
    found = []
    for path in _sources(PACKAGE, ROOT / "pages", ROOT / "app.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b) for b in node.bases]
                is_error = any(b.endswith(("Error", "Exception", "Warning", "StaleArtefact")) for b in bases)
                if "Mixin" in node.name or (len(bases) > 1 and not is_error):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} class {node.name}({', '.join(bases)})")
        assert "Mixed into" not in path.read_text(), path
    assert not found, "\n".join(found)


def test_every_module_imports_in_a_fresh_interpreter():
    """A moved module or a cycle shows here even where no other test imports the module."""
    code = ("import importlib, pathlib\n"
            "for p in sorted(pathlib.Path('gist_core').rglob('*.py')):\n"
            "    if p.name != '__main__.py':\n"
            "        parts = list(p.with_suffix('').parts)\n"
            "        importlib.import_module('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
