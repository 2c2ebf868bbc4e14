"""One page pattern: every dashboard page loads its data through gist_core/app/ui.py's folder_view, the
dashboard's one cached loader. No page keeps a cache of its own, ui.py has no cached loader beside it, and its key
follows the folder: a rewritten artefact is loaded again."""
from __future__ import annotations

import ast
import importlib
import json
import textwrap
from pathlib import Path

import pytest
from fake_run import make_fake_compare, make_fake_run
from repo import ROOT
from streamlit.testing.v1 import AppTest

from gist_core.app import ui

APP = ROOT / "gist_core" / "app"
# Streamlit's caches (and their old names) and functools' caches: a page or the glue that names one caches by itself
CACHES = {"cache_data", "cache_resource", "cache", "experimental_memo", "experimental_singleton", "lru_cache"}
THE_LOADER = "_folder_view"  # the one cached function, in ui.py; folder_view (its only caller) builds its key


def page_sources() -> list[Path]:
    return sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]


def cache_uses(source: str) -> list[tuple[int, str]]:
    """(line, name) of every reference to a cache: a decorator, a call, an attribute, an imported name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in CACHES:
            found.append((node.lineno, node.attr))
        elif isinstance(node, ast.Name) and node.id in CACHES:
            found.append((node.lineno, node.id))
        elif isinstance(node, ast.ImportFrom):
            found += [(node.lineno, a.name) for a in node.names if a.name in CACHES]
    return found


def glue_problems(source: str) -> list[str]:
    """What breaks the pattern in the glue (gist_core/app): a cache anywhere but on THE_LOADER's definition, or a
    call of THE_LOADER from anywhere but folder_view (which builds the key with the folder's stamp)."""
    tree = ast.parse(source)
    allowed = {d.lineno for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == THE_LOADER
               for d in n.decorator_list}
    problems = [f"line {line}: {name} outside {THE_LOADER}'s decorator" for line, name in cache_uses(source)
                if line not in allowed]
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        if fn.name in (THE_LOADER, "folder_view"):
            continue
        problems += [f"line {n.lineno}: {fn.name} calls {THE_LOADER} itself (go through folder_view)"
                     for n in ast.walk(fn) if isinstance(n, ast.Name) and n.id == THE_LOADER]
    return problems


def cached_functions(source: str) -> list[str]:
    return [n.name for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(cache_uses(ast.unparse(d)) for d in n.decorator_list)]


# ----------------------------------------------------------------------------- the pattern, read from the code
@pytest.mark.parametrize("path", page_sources(), ids=lambda p: p.name)
def test_no_page_keeps_a_cache_of_its_own(path):
    source = path.read_text()
    assert not cache_uses(source), f"{path.name}: load through ui.folder_view instead: {cache_uses(source)}"
    assert THE_LOADER not in source, f"{path.name}: call ui.folder_view, not {THE_LOADER}"


def test_the_glue_has_one_cached_loader():
    files = sorted(APP.glob("*.py"))
    assert ROOT / "gist_core" / "app" / "ui.py" in files
    problems = {p.name: glue_problems(p.read_text()) for p in files}
    assert not any(problems.values()), problems
    assert [f for p in files for f in cached_functions(p.read_text())] == [THE_LOADER]


def test_the_checks_would_catch_a_cache_of_its_own():
    """Not vacuous: each way a page or the glue could cache by itself is seen, and the real ui.py's one decorator is."""
    for page in ("@st.cache_data(ttl=60)\ndef load(run_dir):\n    return 1\n",
                 "@st.cache_resource\ndef model():\n    return 1\n",
                 "from streamlit import cache_data\n",
                 "load = st.cache_data(max_entries=4)(spectrum.spectra)\n",
                 "import functools\n@functools.lru_cache(maxsize=2)\ndef f(x):\n    return x\n"):
        assert cache_uses(page), page
    assert not cache_uses("rep = ui.folder_view(spectrum.spectra, run_dir)\n")
    one = textwrap.dedent('''
        @st.cache_data(max_entries=128, show_spinner=False)
        def _folder_view(ref, folder, stamp, args):
            return registry.load(ref)(Path(folder), *args)

        def folder_view(fn, folder, *args, files=()):
            return _folder_view(fn.__qualname__, str(folder), rundir.tree_stamp(folder), args)
        ''')
    assert not glue_problems(one) and cached_functions(one) == [THE_LOADER]
    twin = one + textwrap.dedent('''
        @st.cache_data(max_entries=8, show_spinner=False)
        def _spectra(run_dir: str, mtime: int):
            return spectrum.spectra(run_dir)
        ''')
    assert glue_problems(twin) and cached_functions(twin) == [THE_LOADER, "_spectra"]
    around = one + "\ndef spectra(run_dir):\n    return _folder_view('x', str(run_dir), 0, ())\n"
    assert [p for p in glue_problems(around) if "spectra calls _folder_view itself" in p]
    assert cached_functions((APP / "ui.py").read_text()) == [THE_LOADER]


# ----------------------------------------------------------------------------- the key follows the folder
@pytest.fixture
def counting_view(tmp_path, monkeypatch):
    """A viewer function in an importable module of its own (folder_view finds its function by name), counting
    the calls that were not answered from the cache."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "pattern_views.py").write_text("CALLS = []\n\n\ndef view(folder, arg):\n    CALLS.append(arg)\n"
                                          "    return {'arg': arg, 'calls': len(CALLS)}\n")
    monkeypatch.syspath_prepend(str(src))
    pattern_views = importlib.import_module("pattern_views")
    ui._folder_view.clear()
    yield pattern_views
    ui._folder_view.clear()


def test_folder_view_caches_until_the_folder_changes(counting_view, tmp_path):
    run = tmp_path / "run"
    (run / "clusters").mkdir(parents=True)
    manifest, matrices = run / "manifest.json", run / "geometry" / "ckpt-1.safetensors"
    manifest.write_text("{}")
    matrices.parent.mkdir()
    matrices.write_bytes(b"1")
    view, calls = counting_view.view, counting_view.CALLS

    def load(arg=1):
        return ui.folder_view(view, run, arg, files=[matrices])

    assert load() == {"arg": 1, "calls": 1} and load()["calls"] == 1 and calls == [1]  # the second from the cache
    assert load(2)["calls"] == 2  # other arguments: another entry
    (run / "labels.npy").write_bytes(b"x")
    assert load()["calls"] == 1  # an array without a report: no change
    changes = [lambda: manifest.write_text('{"stages": {}}'),                 # a finished stage
               lambda: (run / "clusters" / "clusters.json").write_text("{}"),  # a nested report written
               lambda: matrices.write_bytes(b"22"),                          # a listed non-JSON file rewritten
               lambda: manifest.unlink()]                                     # the manifest removed
    for n, change in enumerate(changes, start=3):
        change()
        assert load()["calls"] == n, f"change {n - 3} did not invalidate"
        assert load()["calls"] == n  # and is cached again


def test_a_rewritten_report_shows_on_the_next_rerun(tmp_path, monkeypatch):
    """Through a page: the Compare page reads compare.json through folder_view; rewritten, the next rerun shows it."""
    run = make_fake_compare(make_fake_run(tmp_path / "runs" / "cached", n_pool=200, n_val=8, r=4), n_seeds=1)
    monkeypatch.setenv("GIST_LAB_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "cached"
    at.run()
    at.switch_page("pages/7_Compare.py").run()
    assert not at.exception, at.exception
    before = at.dataframe[0].value.set_index("method")["precision"]
    rep = json.loads((run / "compare.json").read_text())
    rep["methods"]["random"]["precision"] = 0.987654
    (run / "compare.json").write_text(json.dumps(rep))
    at.run()
    assert not at.exception, at.exception
    after = at.dataframe[0].value.set_index("method")["precision"]
    assert after["random"] == pytest.approx(0.987654) != before["random"]
    assert after.drop("random").equals(before.drop("random"))
