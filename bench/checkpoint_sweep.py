"""Every bundled target at every warm-up checkpoint: GIST precision and coverage for both aggregations,
both selection rules and three rank rules, from one run folder per target.

    python bench/checkpoint_sweep.py --out runs/sweep            # ~20 min on 2 cores
    python bench/checkpoint_sweep.py --out runs/sweep --targets transform --epochs 1,4

For each target it runs `gist-lab demo --target T --checkpoint E` (the warm-up and validation gradients are
computed once and reused; each checkpoint re-projects the pool) and then re-scores the stored projections.
Writes OUT/sweep.json (one row per target x checkpoint x aggregation x rule x rank rule) and prints a table.
It measures; it decides nothing and never passes or fails.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.config import demo_config
from gist_core.data.examples import groups_from_labels
from gist_core.data.truth import metrics_from, truth_masks
from gist_core.methods import scoring
from gist_core.methods.gist.rescore import rescore
from gist_core.runner.pipeline import Run
from gist_core.store.atomic import atomic_write_json

RANK_RULES = ("tau95", "r8", "rmax")


def rank_for(rule: str, summary: dict) -> int:
    return {"tau95": summary["r95"], "r8": min(8, summary["r_max"]), "rmax": summary["r_max"]}[rule]


def measure(run_dir: Path, summary: dict) -> list[dict]:
    pool = pd.read_parquet(run_dir / "examples.parquet")
    target = pd.read_parquet(run_dir / "target.parquet")
    groups = groups_from_labels(target["id"], target["subtask"])
    truth = truth_masks(pool, list(groups))
    k = summary["n_selected"]
    rows = []
    for aggregation in scoring.AGGREGATIONS:
        for rule in RANK_RULES:
            r = rank_for(rule, summary)
            sc = rescore(run_dir, r, aggregation)
            for balance in scoring.BALANCES:
                idx, _ = scoring.select(sc, k, balance, groups)
                mask = np.zeros(len(pool), dtype=bool)
                mask[idx] = True
                m = metrics_from(truth, mask)
                rows.append({"aggregation": aggregation, "rank_rule": rule, "rank": r, "balance": balance,
                             "precision": m["precision"], "base_rate": m["base_rate"],
                             "coverage": {s: c["selected"] for s, c in m["coverage"].items()},
                             "in_pool": {s: c["in_pool"] for s, c in m["coverage"].items()},
                             "starved": scoring.starved_by_coverage(m["coverage"]),
                             "n_wrong": m["n_wrong_selected"], "n_distractor": m["n_distractor_selected"]})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/sweep"))
    p.add_argument("--targets", default="transform,lookup,facts")
    p.add_argument("--epochs", default="1,2,3,4", help="warm-up checkpoints to score with")
    a = p.parse_args(argv)
    results = []
    path = a.out / "sweep.json"
    if path.exists():
        results = json.loads(path.read_text())["rows"]
    done = {(r["target"], r["checkpoint"]) for r in results}
    for target in a.targets.split(","):
        for e in (int(x) for x in a.epochs.split(",")):
            if (target, e) in done:
                continue
            t0 = time.time()
            run_dir = a.out / target
            summary = Run(demo_config(target, checkpoint=e), run_dir, quiet=True, overwrite=True).execute()
            for row in measure(run_dir, summary):
                results.append({"target": target, "checkpoint": e, "r95": summary["r95"], "r_max": summary["r_max"],
                                **row})
            atomic_write_json(path, {"rows": results})
            print(f"{target} ckpt-{e}: {time.time() - t0:.0f} s", flush=True)
    print_table(results)
    return 0


def print_table(rows: list[dict]) -> None:
    print("| target | ckpt | aggregation | rank | rule | precision | x random | coverage | starved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        cov = " / ".join(f"{r['coverage'][s]}" for s in sorted(r["coverage"]))
        print(f"| {r['target']} | {r['checkpoint']} | {r['aggregation']} | {r['rank_rule']} = {r['rank']} | "
              f"{r['balance']} | {r['precision']:.3f} | {r['precision'] / r['base_rate']:.1f} | {cov} | "
              f"{', '.join(r['starved']) or '-'} |")


if __name__ == "__main__":
    raise SystemExit(main())
