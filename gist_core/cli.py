"""`gist-lab` command line: demo, select, merge, rescore, compare, geometry, bench, models, app."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from gist_core.data.corpus import DEFAULT_DEMO_TARGET  # noqa: E402  (light: no torch)

from gist_core.store.runs import runs_root  # noqa: E402

DEFAULT_RUNS = runs_root()


def _user_errors():
    from gist_core.data.examples import DataError
    from gist_core.grads.per_example import GradientError
    from gist_core.model.load import ModelError
    from gist_core.runner.pipeline import ConfigError
    from gist_core.analysis.geometry import GeometryError
    from gist_core.methods.less import MomentsError
    from gist_core.methods.gist.subspace import SubspaceError
    from gist_core.runner.sharding import DistError
    from gist_core.store.manifest import StoreError
    from gist_core.model.registry import ModelSourceError
    return (ModelSourceError, DataError, ModelError, ConfigError, GradientError, SubspaceError, MomentsError, GeometryError,
            FileNotFoundError, DistError, StoreError)


def _budget(text: str) -> float:
    try:
        return float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget '{text}' is not a number (use 0.05, 5% or a count)") from None


def _add_selection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, help="run directory (default: runs/<name>)")
    p.add_argument("--pool-size", type=int, metavar="N", help="use the first N rows of the pool (default: all)")
    p.add_argument("--budget", type=_budget, help="fraction of the pool (0.05 or 5%%) or a count (500)")
    p.add_argument("--rank", type=int, help="GIST rank r (default: set by --rank-rule, all stored directions)")
    p.add_argument("--rank-rule", choices=["tau", "advisor", "full"],
                   help="rank without --rank: full = all stored directions (default, chosen on evidence: README, "
                        "Selection rules), tau = smallest r reaching --tau explained variance (the GIST paper's rule), "
                        "advisor = the held-out rank advisor's suggestion")
    p.add_argument("--tau", type=float, help="explained-variance threshold of the tau rank rule (0.95)")
    p.add_argument("--r-max", type=int, help="directions stored per pool example (64)")
    p.add_argument("--balance", choices=["global", "subtask", "zscore", "quantile"],
                   help="selection rule: subtask = per-subtask round-robin quota (default, chosen on evidence: README, "
                        "Selection rules), global = top-k of the max subtask cosine (the GIST paper's and LESS's rule), "
                        "zscore / quantile = top-k of the max of each subtask column standardised over the pool")
    p.add_argument("--paper", action="store_true",
                   help="the GIST paper's exact rule: max over individual target examples (--aggregation example_max), "
                        "global top-k (--balance global), rank by 95%% explained variance (--rank-rule tau --tau 0.95); "
                        "flags given beside it still win")
    p.add_argument("--aggregation", choices=["subtask_mean", "example_max"],
                   help="target directions: subtask means (GIST code) or individual examples (paper)")
    p.add_argument("--checkpoint", type=int, help="warm-up epoch whose checkpoint GIST uses (1)")
    p.add_argument("--epochs", type=int, help="warm-up epochs (4)")
    p.add_argument("--lr", type=float, help="warm-up learning rate")
    p.add_argument("--warmup-fraction", type=float, help="random share of the pool to warm up on (0.05)")
    p.add_argument("--lora-r", type=int, help="LoRA rank (8)")
    p.add_argument("--lora-alpha", type=float, help="LoRA alpha (16)")
    p.add_argument("--lora-dropout", type=float, help="LoRA dropout (0)")
    p.add_argument("--lora-targets", help="comma-separated module names (default: per architecture)")
    p.add_argument("--lora-layers", type=int, metavar="L",
                   help="LoRA on the last L transformer layers only (default: all); the frozen layers before them "
                        "need no backward pass (README: A real model on a CPU)")
    p.add_argument("--max-length", type=int, help="tokens per example (256)")
    p.add_argument("--batch-size", type=int, help="per-example-gradient batch size (16)")
    p.add_argument("--proj-dtype", choices=["float32", "bfloat16"],
                   help="dtype of the pool projection g.V (float32; bfloat16 = the GIST reference code, for GPUs)")
    p.add_argument("--no-target-eos", dest="target_eos", action="store_false", default=None,
                   help="end the target's examples at the answer, without end-of-sequence token (the GIST/LESS "
                        "reference code; default: appended, as to the pool's)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seed", type=int)
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow model code from the model's repository (off by default)")
    p.add_argument("--overwrite", action="store_true", help="replace a run with a different config in --out")
    p.add_argument("--quiet", action="store_true")


def _rules(text: str) -> tuple[str, ...]:
    from gist_core.methods.scoring import BALANCES
    return BALANCES if text.strip() == "all" else tuple(r.strip() for r in text.split(",") if r.strip())


def _add_scale_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shard", metavar="I/N", help="an independent job computing pool rows i, i+N, ... into "
                   "RUN/shards/ (after one --prepare run); then `gist-lab merge --run RUN` (select, demo) or the "
                   "same compare command without --shard")
    p.add_argument("--prepare", action="store_true",
                   help="run the shared stages only (data, warm-up, validation gradients), for --shard jobs")


PAPER_RULE = {"aggregation": "example_max", "balance": "global", "rank_rule": "tau", "tau": 0.95}


def _overrides(a: argparse.Namespace) -> dict:
    from gist_core.model.load import LoraSettings
    from gist_core.model.training import TrainConfig
    flat = {"budget": a.budget, "rank": a.rank, "rank_rule": a.rank_rule, "tau": a.tau, "r_max": a.r_max, "balance": a.balance,
            "aggregation": a.aggregation, "checkpoint": a.checkpoint, "warmup_fraction": a.warmup_fraction,
            "max_length": a.max_length, "grad_batch_size": a.batch_size, "device": a.device, "dtype": a.dtype,
            "seed": a.seed, "trust_remote_code": a.trust_remote_code, "proj_dtype": a.proj_dtype,
            "target_eos": a.target_eos, "limit_train": a.pool_size}
    out = {k: v for k, v in flat.items() if v is not None}
    if getattr(a, "paper", False):
        out = {**PAPER_RULE, **out}
    lora = {k: v for k, v in {"r": a.lora_r, "alpha": a.lora_alpha, "dropout": a.lora_dropout,
                              "target_modules": tuple(a.lora_targets.split(",")) if a.lora_targets else None,
                              "last_layers": a.lora_layers}.items()
            if v is not None}
    warm = {k: v for k, v in {"epochs": a.epochs, "lr": a.lr}.items() if v is not None}
    if lora:
        out["lora"] = LoraSettings(**lora)
    if warm:
        out["warmup"] = TrainConfig(**warm)
    return out


def print_summary(summary: dict, out: Path) -> None:
    print(f"\nrun directory: {out}")
    adv = summary.get("advisor_suggested")
    print(f"pool {summary['n_pool']}, selected {summary['n_selected']}, rank r = {summary['rank']} "
          f"by {summary.get('rank_rule', 'tau')} (r95 {summary['r95']}, r99 {summary['r99']}, advisor "
          f"{adv if adv is not None else '-'}, stored {summary['r_max']}), selection rule: {summary['balance']}")
    if "precision" in summary:
        print(f"precision {summary['precision']:.3f} (target skill and correct answer) vs random "
              f"{summary['random_precision']:.3f} (expected: the pool's share): {summary['precision_over_random']:.1f}x; "
              f"wrong answers selected {summary['n_wrong_selected']}, look-alikes {summary['n_distractor_selected']}")
        for rule, e in summary["by_balance"].items():
            cov = ", ".join(f"{s} {c['selected']}/{c['in_pool']}" for s, c in e["coverage"].items())
            print(f"  {rule:8s} precision {e['precision']:.3f}  coverage (selected/in pool): {cov}  "
                  f"wrong {e['n_wrong_selected']}")
    print_starved(summary)
    print(f"wall time {summary['wall_s']:.1f} s; selected examples: {out / 'selected.jsonl'}")


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
            from gist_core.methods.scoring import fair_shares
            cov = summary["by_balance"][summary["balance"]]["coverage"]
            sel = sum(c["selected"] for c in cov.values())
            print(f"WARNING: subtask '{s}' has {cov[s]['selected']} of the {sel} correct target examples selected, "
                  f"less than a third of its proportional share ({fair_shares(cov)[s]:.0f}); {advice}")
        else:
            share = summary["picked_for_subtask"][s]
            fair = summary["n_selected"] / max(1, len(summary["picked_for_subtask"]))
            print(f"WARNING: only {share} of the {summary['n_selected']} selected examples have their highest cosine "
                  f"with subtask '{s}' (less than a third of its proportional share, {fair:.0f}); {advice}")


def _layout(a):
    """This process's part: `--shard i/n`, a torchrun rank, or the single process; checks --out and --prepare."""
    from gist_core.runner import sharding as distributed
    from gist_core.runner.pipeline import ConfigError
    try:
        layout = distributed.from_env(a.shard)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if layout.sharded and a.out is None:
        layout.close()
        raise ConfigError("--out is required with torchrun or --shard: every process must name the same run folder")
    if a.prepare and layout.sharded:
        layout.close()
        raise ConfigError("--prepare runs once, without --shard or torchrun")
    return layout


def _execute(cfg, out: Path | None, a, default_out: Path) -> int:
    """Run a selection as this process's part: single process, a torchrun rank or a --shard job."""
    from gist_core.runner.pipeline import Run
    layout = _layout(a)
    out = out or default_out
    try:
        summary = Run(cfg, out, quiet=a.quiet, overwrite=a.overwrite, layout=layout,
                      until="prepare" if a.prepare else None).execute()
    finally:
        layout.close()
    if summary is not None:
        print_summary(summary, out)
    return 0


def _demo_overrides(a) -> dict:
    """The bundled pool and targets, with another model where --model names one."""
    return {**_overrides(a), **({"model": a.model} if a.model else {})}


def cmd_demo(a) -> int:
    from gist_core.runner.pipeline import demo_config
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
    from gist_core.runner.pipeline import ConfigError, RunConfig
    if a.config:
        cfg = RunConfig.from_json({**json.loads(Path(a.config).read_text()), **_overrides(a)})
    else:
        missing = [f"--{n}" for n in ("model", "train", "target") if getattr(a, n) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required (or --config RUN/config.json)")
        cfg = RunConfig(model=a.model, train=a.train, target=a.target, **_overrides(a))
    return _execute(cfg, a.out, a, DEFAULT_RUNS / time.strftime("select-%Y%m%d-%H%M%S"))


def cmd_merge(a) -> int:
    """Gather the --shard jobs' rows into the run's projection store, then score as a single run would."""
    from gist_core.runner.pipeline import ConfigError, Run, RunConfig
    cfg_path = a.run / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"{a.run}: no config.json (not a run folder, or --prepare was never run)")
    cfg = RunConfig.from_json(json.loads(cfg_path.read_text()))
    summary = Run(cfg, a.run, quiet=a.quiet, merge=True).execute()
    print_summary(summary, a.run)
    return 0


def _run_config_for(a):
    """compare's GIST run: the run folder's own config, a --config, explicit data, or the bundled default."""
    from gist_core.runner.pipeline import ConfigError, RunConfig, demo_config
    existing = a.out / "config.json" if a.out else None
    if a.config or (existing and existing.exists() and not a.model):
        base = json.loads(Path(a.config or existing).read_text())
        return RunConfig.from_json({**base, **_overrides(a)})
    if a.train:
        missing = [f"--{n}" for n in ("model", "train", "target") if getattr(a, n) is None]
        if missing:
            raise ConfigError(f"{', '.join(missing)} required with --train")
        return RunConfig(model=a.model, train=a.train, target=a.target, **_overrides(a))
    return demo_config(a.target or DEFAULT_DEMO_TARGET, **_demo_overrides(a))


def cmd_compare(a) -> int:
    from gist_core.runner.compare import Compare, CompareConfig, format_table
    from gist_core.model.training import TrainConfig
    cfg = _run_config_for(a)
    train = {k: v for k, v in {"epochs": a.train_epochs, "lr": a.train_lr}.items() if v is not None}
    cmp = CompareConfig(methods=tuple(m.strip() for m in a.methods.split(",") if m.strip()), seeds=a.seeds,
                        rules=_rules(a.rules),
                        less_dim=a.less_dim, projector_cache_gb=a.less_cache_gb, test=a.test, full_epochs=a.full_epochs, n_em=a.n_em,
                        less_checkpoints=tuple(a.less_checkpoints.split(",")) if a.less_checkpoints else (),
                        downstream=not a.no_downstream, train=TrainConfig(**{"epochs": 4, "lr": 1e-3, "seed": 0,
                                                                             **train}))
    layout = _layout(a)
    out = a.out or DEFAULT_RUNS / f"compare-{Path(cfg.target).parent.name or 'run'}"
    try:
        rep = Compare(cfg, cmp, out, quiet=a.quiet, overwrite=a.overwrite, layout=layout,
                      until="prepare" if a.prepare else None).execute()
    finally:
        layout.close()
    if rep is None:
        return 0
    print(f"\nrun directory: {out}  ({rep['n_selected']} of {rep['n_pool']} selected, {len(rep['seeds'])} seed(s))")
    print(format_table(rep))
    print(f"table: {out / 'compare.json'}")
    return 0


def cmd_bench(a) -> int:
    from gist_core.runner.bench import BenchConfig, run_bench
    rep = run_bench(BenchConfig(n_small=a.n_small, n_large=a.n_large, batch_size=a.batch_size,
                                rescore_n=a.rescore_n, model=a.model, max_length=a.max_length,
                                lora_layers=a.lora_layers, n_throughput=a.n_throughput, n_loop=a.n_loop,
                                rounds=a.rounds, cpu_options=a.cpu_options), a.out)
    print(json.dumps({k: v for k, v in rep.items() if not isinstance(v, dict)}, indent=2))
    print(f"written: {a.out / 'bench.json'}")
    return 0


def cmd_geometry(a) -> int:
    from gist_core.runner.geometry import GeometryConfig, run_geometry
    cfg = GeometryConfig(module=a.module, n_coords=a.coords, n_examples=a.n_examples, rank=a.rank, seed=a.seed,
                         checkpoints=tuple(int(x) for x in a.checkpoints.split(",")) if a.checkpoints else None)
    rep = run_geometry(a.run, cfg, quiet=a.quiet)
    print("epoch  r95  r99  | Hessian off-diag  A-B mass  Fisher off-diag  Adam-diag fit err  F/H overlap (random)")
    spec = {s["epoch"]: s for s in rep["spectrum"]}
    for e, c in sorted(rep["checkpoints"].items(), key=lambda kv: int(kv[0])):
        s = spec.get(int(e), {})
        print(f"{e:>5s} {s.get('r95', '-'):>4} {s.get('r99', '-'):>4}  | {c['hessian']['offdiag_ratio']:>16.3f}  "
              f"{c['hessian']['mass_AB']:>8.3f}  {c['fisher']['offdiag_ratio']:>15.3f}  "
              f"{c['adam_sqrt_v_fit_error']:>17.3f}  {c['overlap_fisher_hessian']:.3f} ({c['overlap_random_reference']:.4f})")
    print(f"written: {Path(a.run) / 'geometry'}")
    return 0


def cmd_rescore(a) -> int:
    import numpy as np
    from gist_core.runner.pipeline import rescore
    sc = rescore(a.run, a.rank)
    top = np.argsort(-sc.score)[:10]
    print(json.dumps({"rank": sc.rank, "mean_score": float(sc.score.mean()), "top10_rows": top.tolist()}))
    return 0


def cmd_models(a) -> int:
    from gist_core.model import registry as models
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


def cmd_app(a) -> int:
    app = Path(__file__).resolve().parent.parent / "app.py"
    env = {**os.environ, "GIST_LAB_RUNS": str(a.runs)}
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
                            "--server.address", a.address, "--server.port", str(a.port),
                            "--browser.gatherUsageStats", "false"], env=env)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gist-lab", description="Targeted data selection through gradient geometry.")
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("demo", help="run GIST on the bundled tiny model and synthetic corpus")
    d.add_argument("--target", default=DEFAULT_DEMO_TARGET, help="bundled target task: transform | lookup | facts")
    d.add_argument("--model", help="another model on the bundled data: registry name (smollm2-135m), folder or .gguf")
    _add_selection_args(d)
    _add_scale_args(d)
    d.set_defaults(func=cmd_demo)
    s = sub.add_parser("select", help="select training data for a target task")
    s.add_argument("--model", help="Hugging Face id, local folder, .gguf file or fetched registry name (smollm2-135m)")
    s.add_argument("--train", help="pool file (.jsonl/.json/.csv/.parquet) or datasets name/path")
    s.add_argument("--target", help="target validation examples (optional 'subtask' column)")
    s.add_argument("--config", help="replay a run's config.json (flags override its fields)")
    _add_selection_args(s)
    _add_scale_args(s)
    s.set_defaults(func=cmd_select)
    m = sub.add_parser("merge", help="merge the --shard jobs' projections into RUN and score")
    m.add_argument("--run", required=True, type=Path, help="the run folder the shard jobs wrote into")
    m.add_argument("--quiet", action="store_true")
    m.set_defaults(func=cmd_merge)
    r = sub.add_parser("rescore", help="scores at another rank from a run's stored projections")
    r.add_argument("--run", required=True, type=Path)
    r.add_argument("--rank", required=True, type=int)
    r.set_defaults(func=cmd_rescore)
    c = sub.add_parser("compare", help="GIST vs LESS and baselines: selection quality, downstream loss, cost")
    c.add_argument("--methods", default="gist,less,rawcos,random,length,embedding,full",
                   help="comma-separated: gist, less, rawcos, random, length, embedding, full, oracle, gist_mean, gist_max "
                        "(score-based methods are reported under every --rules rule; gist_mean / gist_max: GIST with that "
                        "aggregation on the same projections; oracle is added with ground truth)")
    c.add_argument("--rules", default="global,subtask",
                   help="selection rules applied to every score-based method (gist, less, rawcos, embedding): "
                        "comma-separated from global, subtask, zscore, quantile, or 'all' (global,subtask)")
    c.add_argument("--seeds", type=int, default=3, help="downstream seeds (3)")
    c.add_argument("--model", help="Hugging Face id, folder, .gguf file or registry name (default: the bundled tiny "
                   "model); with --target alone, the bundled pool and that bundled target")
    c.add_argument("--train", help="pool file or datasets name (default: the bundled pool)")
    c.add_argument("--target", help="target validation file, or a bundled target name (transform)")
    c.add_argument("--test", help="target test split (default: test.jsonl beside the target file)")
    c.add_argument("--config", help="a run's config.json to compare on")
    c.add_argument("--less-dim", type=int, default=8192, help="LESS projection dimension (8192)")
    c.add_argument("--less-checkpoints", help="comma-separated LESS checkpoint folders (ours or HF Trainer's)")
    c.add_argument("--less-cache-gb", type=float, default=4.0,
                   help="keep the LESS projection matrix in memory up to this size, else regenerate it per batch (4)")
    c.add_argument("--train-epochs", type=int, help="downstream LoRA epochs (4)")
    c.add_argument("--train-lr", type=float, help="downstream LoRA learning rate (1e-3)")
    c.add_argument("--full-epochs", type=int, default=1, help="epochs for the full-pool row (1)")
    c.add_argument("--n-em", type=int, help="exact-match prompts per subtask (default: the whole test split)")
    c.add_argument("--no-downstream", action="store_true", help="selection quality and cost only")
    _add_selection_args(c)
    _add_scale_args(c)
    c.set_defaults(func=cmd_compare)
    g = sub.add_parser("geometry", help="curvature of a LoRA block per warm-up checkpoint (Hessian, GN, Fisher, Adam)")
    g.add_argument("--run", required=True, type=Path, help="a finished run directory")
    g.add_argument("--module", help="LoRA module name or suffix (default: the last LoRA module)")
    g.add_argument("--coords", type=int, default=2048, help="coordinates sampled from A and B (0 = all)")
    g.add_argument("--n-examples", type=int, help="target examples in the loss (default: all)")
    g.add_argument("--rank", type=int, default=8, help="top-r eigenspaces compared (8)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--checkpoints", help="comma-separated warm-up epochs (default: all)")
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_geometry)
    b = sub.add_parser("bench", help="gradient throughput, batching speed-up, rescore latency, memory scaling")
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--n-small", type=int, default=10_000, help="pool size of the small memory run")
    b.add_argument("--n-large", type=int, default=100_000, help="pool size of the large memory run")
    b.add_argument("--batch-size", type=int, default=16)
    b.add_argument("--rescore-n", type=int, default=100_000)
    b.add_argument("--model", help="model to measure (default: the bundled tiny LM); a registry name, folder or .gguf")
    b.add_argument("--max-length", type=int, default=256, help="tokens per example (256)")
    b.add_argument("--lora-layers", type=int, metavar="L", help="LoRA on the last L layers only (default: all)")
    b.add_argument("--n-throughput", type=int, default=256, help="examples per timed throughput round (256)")
    b.add_argument("--n-loop", type=int, default=64, help="examples timed against the one-at-a-time loop (64)")
    b.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians reported (3)")
    b.add_argument("--cpu-options", action="store_true",
                   help="also measure what each CPU option buys (LoRA layers, response-only logits, attention, threads)")
    b.set_defaults(func=cmd_bench)
    mo = sub.add_parser("models", help="real models offline: fetch a registry model once, list the cache")
    mo.add_argument("action", choices=["fetch", "list"])
    mo.add_argument("names", nargs="*", help="registry names to fetch (smollm2-135m)")
    mo.add_argument("--quiet", action="store_true")
    mo.set_defaults(func=cmd_models)
    ap = sub.add_parser("app", help="open the dashboard (Streamlit)")
    ap.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    ap.add_argument("--port", type=int, default=8501)
    ap.add_argument("--address", default="127.0.0.1")
    ap.set_defaults(func=cmd_app)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.func(a)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        from gist_core.store.atomic import DISK_FULL
        if e.errno not in DISK_FULL:
            raise
        where = f" writing {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or 'no space left on device'}{where}; free some space and rerun the same command "
              "(finished stages are kept)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
