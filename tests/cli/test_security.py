"""Security defaults: no remote code, no pickle loads, the dashboard on localhost."""
from __future__ import annotations

import ast

from repo import ROOT

from gist_core.cli import build_parser
from gist_core.config import RunConfig

PACKAGE = ROOT / "gist_core"


def _calls(name: str):
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == name:
                yield path.name, node


def test_torch_load_only_with_weights_only():
    found = list(_calls("torch.load"))
    assert found, "expected the HF optimizer reader to use torch.load"
    for where, node in found:
        kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert kw.get("weights_only") == "True", f"{where}: torch.load without weights_only=True"
    assert not list(_calls("pickle.load")) and not list(_calls("pickle.loads"))


def test_no_remote_code_by_default():
    assert RunConfig(model="m", train="t", target="v").trust_remote_code is False
    args = build_parser().parse_args(["select", "--model", "m", "--train", "t", "--target", "v"])
    assert args.trust_remote_code is None  # unset: the config's False stands
    for path in PACKAGE.rglob("*.py"):
        assert "trust_remote_code=True" not in path.read_text(), path.name


def test_dashboard_binds_to_localhost_by_default():
    assert build_parser().parse_args(["app"]).address == "127.0.0.1"
