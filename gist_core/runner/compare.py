"""`gist-lab compare`: GIST next to LESS and the common baselines, in one run directory.

Selection quality (precision, recall, coverage against ground truth), downstream quality (LoRA
fine-tuned on each selection with one fixed recipe, several seeds, target test loss and exact
match) and cost (wall time per stage, estimated FLOPs, bytes stored) for every method.

Layout inside the run directory (the GIST run's own artefacts stay where they are):
    compare/less/ckpt-E.npy (+ .done.npy)  LESS training features, N x d float16, one file per checkpoint
    compare/less/val-ckpt-E.npy             LESS validation features
    compare/rawcos.npy, compare/embed.npy   raw-gradient dot products + norm; pool embeddings
    compare/evals/<row>-s<seed>.json        one downstream run each (skipped when present and matching)
    compare/scores.parquet                  every score-based method's score per pool example
    compare.json                            the table, the recipe, the costs, the ratios
Every feature store resumes from its done-mask; every downstream run is its own file: a killed
compare reruns only what is missing.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from gist_core.config import CompareConfig, TrainConfig  # noqa: F401  (CompareConfig: callers import it here too)
from gist_core.data.domains import domain_labels
from gist_core.data.examples import examples_to_frame, subtask_groups
from gist_core.data.registry import resolve_spec
from gist_core.data.truth import truth_masks
from gist_core.methods import baselines, scoring
from gist_core.methods.registry import (  # noqa: F401
    DEFAULT_METHODS,
    FAMILY_LABELS,
    GIST_VARIANTS,
    KNOWN_METHODS,
    LABELS,
    RULE_LABELS,
    SCORED_METHODS,
    row_label,
)
from gist_core.methods.scoring import RULE_FAMILIES, row_name, split_row  # noqa: F401  (bench and tests use them here)
from gist_core.runner.baseline_features import BaselineFeatures
from gist_core.runner.compare_report import CompareReport, agreement, format_table  # noqa: F401  (re-exported)
from gist_core.runner.costs import CostBook
from gist_core.runner.downstream import Downstream
from gist_core.runner.pipeline import RESULT_FILES, ConfigError, Run, RunConfig, choose_rank, load_subspace, rank_advice
from gist_core.runner.reports import stamp
from gist_core.runner.sharding import Layout, single_process_env
from gist_core.store.artefacts import load_projections
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.store.layout import COMPARE_REPORT, SCORES, rel_compare


def default_test_split(target: str) -> str | None:
    p = Path(resolve_spec(target))  # a data registry name (gsm8k): its cached val.jsonl, with test.jsonl beside it
    cand = p.with_name("test.jsonl") if p.is_file() else None
    return str(cand) if cand is not None and cand.exists() and cand != p else None


class Compare(BaselineFeatures, CostBook, Downstream, CompareReport):
    """Runs (or resumes) GIST, then every baseline's features, selections, downstream runs and costs."""

    def __init__(self, run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False,
                 layout: Layout | None = None, until: str | None = None):
        self.run = Run(run_cfg, out, quiet=quiet, overwrite=overwrite, layout=layout, until=until)
        self.cfg, self.cmp, self.store = self.run.cfg, cmp, self.run.store  # with the model file's hash filled in
        self.test_spec = cmp.test or default_test_split(run_cfg.target)
        self.costs: dict[str, dict[str, float]] = {}
        self.flops: dict[str, float] = {}
        self.bytes: dict[str, int] = {}
        self._projector = None

    def log(self, msg: str) -> None:
        self.run.log(msg)

    # ------------------------------------------------------------------ main
    def execute(self) -> dict | None:
        t0 = time.time()
        self.run.check_inputs()
        with contextlib.ExitStack() as held:
            self.run.take_folder(held, [*RESULT_FILES, COMPARE_REPORT, rel_compare(SCORES)])
            report = self._execute(t0)
            self.run.finish()
        return report

    def _execute(self, t0: float) -> dict | None:
        gist_summary = self.run.stages(t0)
        layout = self.run.layout
        if self.run.until == "prepare":
            return None
        if layout.shard_job:  # this job's share of the LESS pool features; the plain rerun merges and reports
            if "less" in self.cmp.methods:
                self._less_pool_features_on_every_rank()
            return None
        if layout.torchrun:  # the LESS pool features on every rank; the rest on rank 0 alone
            if "less" in self.cmp.methods:
                self._less_pool_features_on_every_rank()
            if not layout.main:
                return None
            self.run.layout = Layout()
            with single_process_env():
                return self._finish(gist_summary, t0)
        return self._finish(gist_summary, t0)

    def _finish(self, gist_summary: dict, t0: float) -> dict:
        pool, target = self.run.inputs.pool, self.run.inputs.target
        self.groups = subtask_groups(target)
        self.k = scoring.budget_to_count(self.cfg.budget, len(pool))
        frame = examples_to_frame(pool, ["id", "skill", "kind"])
        self.truth = truth_masks(frame, list(self.groups))
        self.domains = np.array(domain_labels(pool))  # a reading aid for every selection: code / math / writing
        tok, model = self.run.tokenizer_and_model()
        self.n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # base model only
        self.tokens = {"pool": sum(map(len, self.run.inputs.pool_tok.input_ids)),
                       "target": sum(map(len, self.run.inputs.target_tok.input_ids))}
        rows = self.cmp.rows(self.truth is not None)
        scores = self.method_scores(gist_summary)
        selections = self.selections(scores, rows)
        self.save_scores(frame, scores)
        report = stamp("compare", self.report(rows, scores, selections, gist_summary))
        if self.cmp.downstream:
            self.downstream(rows, selections, report)
        report["wall_s"] = round(time.time() - t0, 2)
        atomic_write_json(self.run.paths.compare_report, report)
        return report

    # ------------------------------------------------------------------ scores per method
    def method_scores(self, gist_summary: dict) -> dict[str, scoring.Scores]:
        """Each requested score-based method's scores, in the registry's order (GIST first: the rows that
        re-aggregate its projections reuse its cost entries)."""
        wanted = set(self.cmp.methods)
        if wanted & set(GIST_VARIANTS) and "gist" not in wanted:
            self.gist_scores()  # their costs are GIST's plus their own scoring
        out: dict[str, scoring.Scores] = {}
        for name in SCORED_METHODS:
            if name in wanted:
                out[name] = self.scorer(name)()
        return out

    def scorer(self, name: str) -> Callable[[], scoring.Scores]:
        """The registry's method name -> the code that computes its scores over the pool."""
        if name in GIST_VARIANTS:
            return lambda: self.gist_scores(GIST_VARIANTS[name], name)
        return {"gist": self.gist_scores, "less": self.less_scores, "rawcos": self.rawcos_scores,
                "embedding": self.embedding_scores, "rds": self.rds_scores, "minilm": self.minilm_scores,
                "length": self.length_scores}[name]

    def length_scores(self) -> scoring.Scores:
        t0 = time.time()
        sc = baselines.length_scores(np.asarray(self.run.inputs.pool_tok.n_response_tokens), self.groups)
        self.costs["length"] = {"scoring": time.time() - t0}
        return sc

    def gist_scores(self, variant: dict | None = None, name: str = "gist") -> scoring.Scores:
        """GIST from the run's stored projections; a `variant` (other settings: aggregation, score, rank rule)
        adds a row at no gradient cost (the same features, another way of scoring with them)."""
        t0 = time.time()
        cfg = replace(self.cfg, **{k: v for k, v in (variant or {}).items() if k != "balance"})
        sub = load_subspace(self.run.paths.subspace(self.cfg.checkpoint))
        stored = load_projections(self.run.paths.train_proj)
        X = stored.coords
        rank = choose_rank(cfg, sub, rank_advice(cfg, sub, stored, self.groups) if cfg.rank_rule == "advisor" else None)
        kind = cfg.score if stored.norms is not None else "subspace"  # an older store: the score it can give
        sc = scoring.gist_scores(X, sub.val_coords, self.groups, rank, cfg.aggregation, kind, stored.norms)
        if name != "gist":
            self.costs[name] = {**self.costs["gist"], "scoring": self.costs["gist"]["scoring"] + time.time() - t0}
            self.flops[name], self.bytes[name] = self.flops["gist"], self.bytes["gist"]
            return sc
        st = self._stage_walls()
        warm_s, warm_f = self._warmup_cost(self.cfg.checkpoint)
        val_s, sub_s = self._val_cost(self.cfg.checkpoint)
        D, n, nv, R = sub.basis.shape[0], len(self.run.inputs.pool), len(self.run.inputs.target), sub.r_max
        self.costs["gist"] = {"warmup": warm_s, "val_grads": val_s, "subspace": sub_s,
                              "pool_features": st["train_proj"]["wall_s"],
                              "scoring": st.get("scores", {}).get("wall_s", 0.0) + time.time() - t0}
        self.flops["gist"] = (warm_f + 6 * self.n_params * self.tokens["target"] + 2 * nv * nv * D + 2 * D * nv * R
                              + 6 * self.n_params * self.tokens["pool"] + 2 * n * D * R + 2 * n * R * len(self.groups))
        self.bytes["gist"] = (int(np.prod(X.shape)) + n) * X.dtype.itemsize  # the coordinates and |g|
        self.gist_rank, self.dim = rank, D
        return sc

    # ------------------------------------------------------------------ selections
    def selections(self, scores: dict[str, scoring.Scores], rows: list[str]) -> dict[str, list[np.ndarray]]:
        """Row -> one index array per seed (the same array for deterministic methods)."""
        n, k, seeds = len(self.run.inputs.pool), self.k, range(self.cmp.seeds)
        out: dict[str, list[np.ndarray]] = {}
        for row in rows:
            family, rule = split_row(row)
            if family in scores:
                idx = scoring.select(scores[family], k, rule, self.groups)[0]
            elif row == "random":
                out[row] = [baselines.random_selection(n, k, self.cfg.seed + s) for s in seeds]
                continue
            elif row == "full":
                idx = np.arange(n)
            elif row == "oracle":
                out[row] = [baselines.oracle_selection(self.truth.relevant, k, s) for s in seeds]
                continue
            else:
                raise ConfigError(f"no scores for method '{row}'")
            out[row] = [idx] * self.cmp.seeds
        for row in ("random", "full", "oracle"):
            self.costs.setdefault(row, {"scoring": 0.0})
        return out

    def save_scores(self, frame, scores: dict[str, scoring.Scores]) -> None:
        import pandas as pd
        df = pd.DataFrame({"id": frame["id"]})
        for name, sc in scores.items():  # the max, and the subtask columns every rule starts from
            df[f"score:{name}"] = sc.score
            names, cols = scoring.subtask_columns(sc, self.groups)
            for t, sub in enumerate(names):
                df[f"col:{name}:{sub}"] = cols[:, t]
        with atomic_path(self.run.paths.compare_scores) as tmp:
            df.to_parquet(tmp, index=False)

def run_compare(run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False) -> dict:
    return Compare(run_cfg, cmp, out, quiet=quiet, overwrite=overwrite).execute()


