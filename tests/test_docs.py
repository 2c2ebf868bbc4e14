"""The documentation: the MkDocs site builds with --strict, every `gist-lab` command line shown in a shell block of
the site or the README parses with the real CLI parser, and the README stays a front door (≤ 250 lines)."""
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from gist_core.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250
SHELL_FENCES = ("bash", "sh", "shell", "console")  # diagrams and output are fenced as "text"
FENCE = re.compile(r"^(\s*)```\s*([\w-]*)")
# Command lines that elide arguments with a literal `...` (the text around them gives the rest). The `...` token is
# dropped and what is left must still parse; a line here that no page shows any more fails, so the list stays true.
ELIDED = {
    "gist-lab select ... --out RUN --prepare",
    "gist-lab select ... --out RUN --shard 0/4",
    "gist-lab select ... --out RUN --shard 3/4",
    "gist-lab compare --model runs/proxy-smollm2 --pool-size 1000 ...",
    "gist-lab proxy build ... --sweep 0.7,0.3 ... --out runs/proxy-smollm2-kd",
}


def _pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _shell_lines(path: Path, fences=SHELL_FENCES):
    """(line number, command line) of every line in a fence of those languages, backslash continuations joined."""
    fence, indent, pending, start = None, 0, "", 0
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        m = FENCE.match(raw)
        if m:
            fence, indent = (m.group(2), len(m.group(1))) if fence is None else (None, 0)
            continue
        if fence is None or (fence not in fences if fences is not None else fence in SHELL_FENCES):
            continue
        line = raw[indent:] if raw[:indent].isspace() else raw.lstrip()
        if not pending:
            start = n
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield start, (pending + line).strip()
        pending = ""


def _gist_lab_commands(line: str) -> list[list[str]]:
    """The argument lists of every `gist-lab` command in a shell line: alone, chained with && / || / ; / |, or
    launched by `torchrun ... --no-python gist-lab ...`."""
    tokens = shlex.split(line, comments=True)
    segments, cur = [], []
    for t in tokens:
        if t in ("&&", "||", ";", "|"):
            segments.append(cur)
            cur = []
        else:
            cur.append(t)
    segments.append(cur)
    out = []
    for seg in segments:
        if seg and seg[0] == "torchrun" and "gist-lab" in seg:
            seg = seg[seg.index("gist-lab"):]
        if seg and seg[0] == "gist-lab":
            out.append(seg[1:])
    return out


def test_the_site_builds_strict(tmp_path):
    """`mkdocs build --strict`: a broken link, a missing anchor, a page left out of the nav or a docstring that
    does not render fails (mkdocs is in the test extras, so its absence fails too)."""
    missing = [name for name in ("mkdocs", "material", "mkdocstrings_handlers") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: the site's packages are in the test extras: pip install -e '.[test]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert (tmp_path / "site" / "benchmarks" / "index.html").is_file()


def test_every_shown_gist_lab_command_parses():
    parser = build_parser()
    seen, bad, elided = 0, [], set()
    for path in _pages():
        for n, line in _shell_lines(path):
            for args in _gist_lab_commands(line):
                if "..." in args:
                    elided.add(re.sub(r"\s+", " ", line.split("#")[0]).strip())
                    args = [a for a in args if a != "..."]
                seen += 1
                try:
                    parser.parse_args(args)
                except SystemExit:
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line}")
    assert seen >= 25, f"only {seen} gist-lab command lines found: is the extraction broken?"
    assert not bad, "these command lines do not parse with gist_core.cli.build_parser():\n" + "\n".join(bad)
    assert elided == ELIDED, f"lines with '...' changed: new {sorted(elided - ELIDED)}, gone {sorted(ELIDED - elided)}"


def test_no_command_hides_in_another_fence():
    """A `gist-lab` line in a fence that is not a shell fence (no language, `text`, ...) would escape the check
    above: fence it as bash."""
    hidden = [f"{path.relative_to(ROOT)}:{n}: {line}" for path in _pages()
              for n, line in _shell_lines(path, fences=None) if re.match(r"(torchrun .*)?gist-lab ", line)]
    assert not hidden, "fence these as bash:\n" + "\n".join(hidden)


def test_the_extraction_sees_chains_continuations_and_torchrun(tmp_path):
    """The check above is not vacuous: the shapes of command line the pages use are all found."""
    page = tmp_path / "p.md"
    page.write_text("text\n\n```bash\npip install -e . && gist-lab demo   # comment\n"
                    "torchrun --nproc-per-node 4 --no-python gist-lab merge --run R\n"
                    "gist-lab proxy build --out D \\\n    --rho 0.5\n```\n\n```python\ngist-lab nothing\n```\n")
    found = [args for _, line in _shell_lines(page) for args in _gist_lab_commands(line)]
    assert found == [["demo"], ["merge", "--run", "R"], ["proxy", "build", "--out", "D", "--rho", "0.5"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["select", "--no-such-flag"])


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move the detail into docs/"
    text = README.read_text()
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", link):
            assert (ROOT / link).exists(), f"README.md links to a missing file: {link}"


def _python_blocks(path: Path) -> dict[str, str]:
    """First-line file name ('# gist_core/...py') -> code, for every python block of a page that names its file."""
    blocks, fence, lines = {}, None, []
    for raw in path.read_text().splitlines():
        m = FENCE.match(raw)
        if m and fence is None:
            fence, lines = m.group(2), []
        elif m:
            if fence == "python" and lines and lines[0].startswith("# gist_core/"):
                blocks[lines[0][2:].split(":")[0].strip()] = "\n".join(lines[1:]) + "\n"
            fence = None
        elif fence is not None:
            lines.append(raw)
    return blocks


def test_the_contributing_pages_example_method_works(tmp_path, monkeypatch):
    """docs/contributing.md's GraNd example, built from its own code blocks: its folder as modules, its registry
    Entry added, then compare's machinery scores a run's stored projections with it."""
    import types

    import numpy as np
    from fake_run import make_fake_run

    from gist_core.config import CompareConfig
    from gist_core.methods import registry
    from gist_core.methods.gist.artefacts import NORM_META, load_projections
    from gist_core.store.layout import RunLayout

    blocks = _python_blocks(DOCS / "contributing.md")
    assert set(blocks) == {"gist_core/methods/grand/scores.py", "gist_core/methods/grand/stages.py",
                           "gist_core/methods/registry.py"}
    package = types.ModuleType("gist_core.methods.grand")
    package.__path__ = []
    monkeypatch.setitem(sys.modules, "gist_core.methods.grand", package)
    for name in ("scores", "stages"):  # in import order: stages imports scores
        module = types.ModuleType(f"gist_core.methods.grand.{name}")
        monkeypatch.setitem(sys.modules, module.__name__, module)
        exec(compile(blocks[f"gist_core/methods/grand/{name}.py"], module.__name__, "exec"), module.__dict__)
    entry = eval(blocks["gist_core/methods/registry.py"].strip().rstrip(","), vars(registry))
    monkeypatch.setattr(registry, "ENTRIES", registry.ENTRIES + (entry,))

    cmp = CompareConfig(methods=("gist", "grand", "random"))
    assert "grand" in cmp.rows(has_truth=False) and "grand_subtask" not in cmp.rows(has_truth=False)
    assert registry.row_label("grand") == "GraNd (gradient norm)"
    run = make_fake_run(tmp_path / "run", n_pool=200, n_val=8, r=4)
    store = RunLayout(run).train_proj  # the fake run's store predates norms: add them as a real run keeps them
    norms = np.random.default_rng(0).gamma(2.0, size=200).astype(np.float32)
    np.save(store, np.c_[np.load(store), norms].astype(np.float32))
    store.with_suffix(".json").write_text(json.dumps({NORM_META: "last column"}))
    cc = types.SimpleNamespace(run=types.SimpleNamespace(paths=RunLayout(run)), book=types.SimpleNamespace(costs={}))
    scorer = next(s for s in registry.scorers() if s.name == "grand")
    sc = registry.load(scorer.scores)(cc)
    np.testing.assert_allclose(sc.score, norms)
    assert np.argmax(sc.score) == np.argmax(norms) and load_projections(store).coords.shape[0] == 200
    assert "grand" in cc.book.costs and sc.columns.shape == (200, 1)
