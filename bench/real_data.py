"""The real-data benchmark: on a real instruction pool and real targets, does training on a selection beat
training on a random one, on LESS's, on the whole pool, and at what cost?

    gist-lab models fetch smollm2-135m minilm
    gist-lab data fetch sharegpt gsm8k humaneval
    python bench/real_data.py            # SmolLM2-135M, 2,000 ShareGPT rows, GSM8K and HumanEval: ~11 h on 2 cores
                                         # (the stages measured: docs/benchmarks/real-data.md)
    python bench/real_data.py --small    # the same stages at toy sizes, in minutes

Per target and budget it runs (or resumes) one `gist-lab compare` in one run folder per target, so the pool's
features are computed once per target; the warm-up and LESS's pool features are computed once for both
targets (they depend on the pool alone: gist_core.store.shared), and a downstream adapter is trained once per
selection (random and the full pool are the same rows for every target). Each method is scored at its own rule
(`compare --only`): GIST with the defaults, GIST as in the paper, LESS (global top-k, its paper's), raw-gradient
cosine and the embeddings (RDS+'s round-robin over target examples). Every row: LoRA fine-tuned on the selection
with one fixed recipe, 3 seeds; the metric is the per-token negative log-likelihood of the gold answer on the
target's held-out test rows (GSM8K: the worked answer; HumanEval: the canonical solution; no model code is
ever run), with GSM8K exact match on the final number beside it. Then report.json, report.md (the tables)
and nll.png (the figure) under --out. Kill it anywhere and rerun the same command: every finished piece is kept.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from gist_core.store.manifest import versions as package_versions

ROWS = ("gist_subtask", "gist_paper", "less", "rawcos_subtask", "rds_examples", "minilm_examples", "random", "full")
FULL = {"model": "smollm2-135m", "train": "sharegpt", "targets": "gsm8k,humaneval", "pool_size": 2000,
        "budgets": "0.05,0.025", "seeds": 3, "lora_layers": 4, "max_length": 128, "target_max_length": 384,
        "epochs": 4, "train_epochs": 2, "less_dim": 8192, "less_cache_gb": 12.0, "n_em": 20, "em_tokens": 192,
        "out": "runs/real-data"}
SMALL = {**FULL, "pool_size": 160, "budgets": "0.1,0.05", "seeds": 2, "epochs": 2, "train_epochs": 1,
         "less_dim": 64, "n_em": 2, "em_tokens": 24, "target_max_length": 256, "out": "runs/real-data-small"}
EXACT_MATCH_TARGETS = ("gsm8k",)  # final-number exact match; HumanEval's would need the model's code run


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="toy sizes, minutes (the flags below still win)")
    for name, default in FULL.items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=None, help=f"(full: {default})")
    p.add_argument("--rows", default=",".join(ROWS), help="compare rows, each method at its own rule")
    p.add_argument("--report-only", action="store_true", help="rebuild the report from the finished compare runs")
    a = p.parse_args(argv)
    preset = SMALL if a.small else FULL
    for name, default in preset.items():
        if getattr(a, name) is None:
            setattr(a, name, default)
    a.out = Path(a.out)
    a.argv = list(sys.argv[1:] if argv is None else argv)
    return a


def budget_tag(budget: float) -> str:
    return f"{budget * 100:g}pct"


def compare_argv(a, target: str, budget: float) -> list[str]:
    """The `gist-lab compare` command of one target at one budget (its run folder: OUT/<target>)."""
    argv = ["compare", "--model", a.model, "--train", a.train, "--target", target, "--out", str(a.out / target_name(target)),
            "--pool-size", str(a.pool_size), "--budget", str(budget), "--seeds", str(a.seeds), "--only", a.rows,
            "--lora-layers", str(a.lora_layers), "--max-length", str(a.max_length),
            "--target-max-length", str(a.target_max_length), "--epochs", str(a.epochs),
            "--train-epochs", str(a.train_epochs), "--full-epochs", "1", "--less-dim", str(a.less_dim),
            "--less-cache-gb", str(a.less_cache_gb), "--em-tokens", str(a.em_tokens),
            "--n-em", str(a.n_em if target_name(target) in EXACT_MATCH_TARGETS else 0), "--overwrite"]
    return argv


def target_name(target: str) -> str:
    """A registry name as given; a file path by its folder (targets/<name>/val.jsonl -> name)."""
    p = Path(target)
    return p.parent.name if p.suffix else target


def run_compare(a, target: str, budget: float) -> Path:
    """One compare (resumed when it ran before); its table kept as OUT/<target>/compare-<budget>.json."""
    kept = a.out / target_name(target) / f"compare-{budget_tag(budget)}.json"
    if kept.exists():
        return kept
    argv = compare_argv(a, target, budget)
    print(f"== {target_name(target)}, budget {budget:g}: gist-lab {' '.join(argv)}", flush=True)
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gist_core.cli", *argv], check=True)
    rep = json.loads((a.out / target_name(target) / "compare.json").read_text())
    rep["bench_wall_s"] = round(time.time() - t0, 1)
    rep["command"] = "gist-lab " + " ".join(argv)
    tmp = kept.with_suffix(".tmp")
    tmp.write_text(json.dumps(rep, indent=2, sort_keys=True))
    tmp.replace(kept)
    return kept


def versions() -> dict:
    return package_versions()


def method_row(e: dict) -> dict:
    """What the report keeps of a compare row."""
    peak = e.get("peak_rss_bytes")
    return {"label": e["label"], "nll": e.get("test_loss"), "nll_std": e.get("test_loss_std"),
            "exact_match": e.get("exact_match"), "exact_match_std": e.get("exact_match_std"),
            "per_seed": [r["test_loss"] for r in e.get("per_seed", [])], "domains": e.get("domains"),
            "wall_s": e.get("wall_s"), "peak_mb": None if peak is None else round(peak / 2**20, 1),
            "stored_mb": round(e.get("bytes", 0) / 2**20, 2), "train_steps": e.get("train_steps")}


def ordered(a, methods: dict) -> list[str]:
    """The rows in the order asked for (compare.json keeps them sorted), then any it added (oracle)."""
    asked = [r for r in a.rows.split(",") if r in methods]
    return asked + sorted(set(methods) - set(asked))


def made_by(a) -> str:
    """The command that made the report: the flags it was given, less --report-only (a rebuild is not a run)."""
    flags = [f for f in a.argv if f != "--report-only"]
    return " ".join(["python bench/real_data.py", *flags])


def build_report(a, tables: dict[str, dict[str, Path]]) -> dict:
    rep = {"command": made_by(a), "versions": versions(),
           "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()
                        if k not in ("report_only", "argv")},
           "rows": a.rows.split(","), "targets": {}}
    for target, per_budget in tables.items():
        entry = {}
        for budget, path in per_budget.items():
            c = json.loads(path.read_text())
            entry[budget] = {"n_pool": c["n_pool"], "n_selected": c["n_selected"], "test": c["test"],
                             "base": {"nll": c["base"]["test_loss"], "exact_match": c["base"]["exact_match"]},
                             "pool_domains": c["pool_domains"], "gist": c["gist"], "command": c["command"],
                             "methods": {row: method_row(c["methods"][row]) for row in ordered(a, c["methods"])}}
        rep["targets"][target] = entry
    return rep


def markdown(rep: dict) -> str:
    lines = [f"Command: `{rep['command']}`; versions: " + ", ".join(f"{k} {v}" for k, v in rep["versions"].items()), ""]
    for target, per_budget in rep["targets"].items():
        for budget, t in per_budget.items():
            em = target in EXACT_MATCH_TARGETS
            focus = "math" if target == "gsm8k" else "code" if target == "humaneval" else None
            lines += [f"### {target}, budget {budget} ({t['n_selected']} of {t['n_pool']} pool rows)", "",
                      "| method | gold-answer NLL (mean ± std) | Δ vs random | " + ("exact match | " if em else "")
                      + (f"{focus} share | " if focus else "") + "selection wall s | peak MB | stored MB |",
                      "|---|---|---|" + ("---|" if em else "") + ("---|" if focus else "") + "---|---|---|"]
            rnd = t["methods"].get("random", {}).get("nll")
            for row, m in t["methods"].items():
                if m["nll"] is None:
                    continue
                delta = "" if rnd is None or row == "random" else f"{m['nll'] - rnd:+.3f}"
                cells = [m["label"], f"{m['nll']:.3f} ± {m['nll_std']:.3f}", delta]
                if em:
                    cells.append("-" if m["exact_match"] is None else f"{m['exact_match']:.3f}")
                if focus:
                    cells.append(f"{m['domains'][focus]:.2f}" if m.get("domains") else "-")
                cells += [f"{m['wall_s']:.0f}", "-" if m["peak_mb"] is None else f"{m['peak_mb']:.0f}",
                          f"{m['stored_mb']:.2f}"]
                lines.append("| " + " | ".join(cells) + " |")
            base = t["base"]
            lines.append(f"| base model (no LoRA) | {base['nll']:.3f} | | " + ("| " if em else "")
                         + (f"{t['pool_domains'][focus]:.2f} (pool) | " if focus else "") + "| | |")
            lines.append("")
    return "\n".join(lines)


def figure(rep: dict):
    """NLL per method with error bars (std over seeds), one panel per target, a bar per budget."""
    targets = list(rep["targets"])
    fig = make_subplots(rows=1, cols=len(targets), subplot_titles=targets)
    for col, target in enumerate(targets, start=1):
        for budget, t in rep["targets"][target].items():
            rows = [r for r, m in t["methods"].items() if m["nll"] is not None]
            fig.add_trace(go.Bar(x=[t["methods"][r]["label"].split(",")[0] for r in rows],
                                 y=[t["methods"][r]["nll"] for r in rows], name=f"{target} {budget}",
                                 error_y={"type": "data", "array": [t["methods"][r]["nll_std"] for r in rows]}),
                          row=1, col=col)
        fig.update_yaxes(title_text="gold-answer NLL (lower is better)", row=1, col=col)
    fig.update_layout(barmode="group", height=520, width=560 * len(targets), template="plotly_white",
                      margin={"t": 60, "b": 160})
    return fig


def save_png(fig, path: Path) -> bool:
    """Render with the Debian chromium through Playwright (the browser tests' stack); False when unavailable."""
    try:
        from playwright.sync_api import sync_playwright  # lazy: optional (the test extra); without it no PNG
    except ImportError:
        return False
    if not Path("/usr/bin/chromium").exists():
        return False
    html = path.with_suffix(".html")
    html.write_text(pio.to_html(fig, include_plotlyjs=True, full_html=True))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--no-first-run"])
        page = browser.new_page(viewport={"width": int(fig.layout.width) + 40, "height": int(fig.layout.height) + 40})
        page.goto(html.resolve().as_uri())
        page.wait_for_selector(".main-svg")
        page.locator(".plotly").first.screenshot(path=str(path))
        browser.close()
    html.unlink()
    return True


def main(argv=None) -> dict:
    a = parse(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    budgets = [float(b) for b in a.budgets.split(",")]
    targets = a.targets.split(",")
    tables: dict[str, dict[str, Path]] = {}
    for target in targets:
        for budget in budgets:
            kept = a.out / target_name(target) / f"compare-{budget_tag(budget)}.json"
            if not a.report_only:
                kept = run_compare(a, target, budget)
            if kept.exists():
                tables.setdefault(target_name(target), {})[f"{budget:g}"] = kept
    rep = build_report(a, tables)
    (a.out / "report.json").write_text(json.dumps(rep, indent=2, sort_keys=True))
    (a.out / "report.md").write_text(markdown(rep))
    if rep["targets"] and save_png(figure(rep), a.out / "nll.png"):
        print(f"figure: {a.out / 'nll.png'}")
    print(markdown(rep))
    print(f"report: {a.out / 'report.json'}, {a.out / 'report.md'}")
    return rep


if __name__ == "__main__":
    if shutil.which("gist-lab") is None and __package__ is None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
