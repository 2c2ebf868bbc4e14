"""The method registry is the one list: the CLI's subcommands and the dashboard's pages are built from it, so a
method registered once appears in both (the contributor page's example method, docs/contributing.md)."""
from __future__ import annotations

import sys
from dataclasses import replace

import pytest
from repo import ROOT

from gist_core.cli import build_parser, main
from gist_core.methods import registry

EXAMPLE = '''
def arguments(p):
    p.add_argument("--shout", action="store_true")

def run(a):
    print("EXAMPLE" if a.shout else "example")
    return 0
'''
PAGE = '''
import streamlit as st
st.title("Example page")
'''


@pytest.fixture
def example_entry(tmp_path, monkeypatch):
    (tmp_path / "example_method.py").write_text(EXAMPLE)
    (tmp_path / "example_page.py").write_text(PAGE)
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = registry.Entry("example", "Methods", "an example method",
                           commands=(registry.Command("example", "the example method", "example_method:arguments",
                                                      "example_method:run"),),
                           pages=(registry.Page("example", str(tmp_path / "example_page.py"), "Example", ":material/star:"),))
    monkeypatch.setattr(registry, "ENTRIES", registry.ENTRIES + (entry,))
    yield entry
    sys.modules.pop("example_method", None)


def _subcommands(parser) -> set[str]:
    return set(parser._subparsers._group_actions[0].choices)


def test_a_registered_method_gets_its_subcommand(example_entry, capsys):
    assert "example" not in _subcommands(build_parser(registry.ENTRIES[:-1]))
    assert "example" in _subcommands(build_parser())
    assert main(["example", "--shout"]) == 0
    assert capsys.readouterr().out.strip() == "EXAMPLE"


def test_a_registered_method_gets_its_page(example_entry):
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    at.switch_page(example_entry.pages[0].file).run()
    assert not at.exception and [t.value for t in at.title] == ["Example page"]


def test_every_command_and_page_in_the_registry_exists():
    names = [c.name for c in registry.commands()]
    assert len(names) == len(set(names)), "a subcommand registered twice"
    for c in registry.commands():
        assert callable(registry.load(c.arguments)), c.arguments
        assert callable(registry.load(c.run)), c.run
    keys = [p.key for p in registry.pages()]
    assert len(keys) == len(set(keys)) and keys[0] == "home"
    assert {p.file for p in registry.pages()} == {f"pages/{p.name}" for p in (ROOT / "pages").glob("*.py")}


def test_a_command_with_a_broken_reference_fails_loudly():
    bad = replace(registry.ENTRIES[0], commands=(registry.Command("x", "x", "gist_core.cli.parsers:no_such", "m:f"),))
    with pytest.raises(AttributeError):
        build_parser((bad,))


def test_a_registered_scorer_becomes_a_compare_method(monkeypatch):
    """compare's methods and their table labels come from the registry's scorers."""
    from gist_core.config import CompareConfig
    from gist_core.errors import ConfigError
    with pytest.raises(ConfigError, match="unknown method"):
        CompareConfig(methods=("gist", "example"))
    entry = registry.Entry("example", "Methods", "an example scorer",
                           scorers=(registry.Scorer("example", "Example score", "example_method:scores"),))
    monkeypatch.setattr(registry, "ENTRIES", registry.ENTRIES + (entry,))
    cmp = CompareConfig(methods=("gist", "example"), rules=("global", "subtask"))
    assert "example_subtask" in cmp.rows(has_truth=False)  # a per-subtask score: every rule applies
    assert registry.row_label("example_subtask") == "Example score, per-subtask quota"
