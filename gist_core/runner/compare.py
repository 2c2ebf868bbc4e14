"""`gist-lab compare`: GIST next to LESS and the common baselines, in one run directory.

Selection quality (precision, recall, coverage against ground truth), downstream quality (LoRA
fine-tuned on each selection with one fixed recipe, several seeds, target test loss and exact
match) and cost (wall time per stage, estimated FLOPs, bytes stored) for every method.

ProcessSplit inside the run directory (the GIST run's own artefacts stay where they are):
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

import numpy as np
import pandas as pd

from gist_core.config import CompareConfig, RunConfig
from gist_core.data.domains import domain_labels
from gist_core.data.examples import examples_to_frame, subtask_groups
from gist_core.data.registry import default_test_split
from gist_core.data.truth import truth_masks
from gist_core.errors import ConfigError
from gist_core.methods import registry, scoring
from gist_core.methods.baselines import scores as baselines
from gist_core.methods.less.stages import less_pool_features_only
from gist_core.methods.scoring import split_row
from gist_core.runner.compare_context import CompareContext
from gist_core.runner.compare_report import build_report
from gist_core.runner.costs import CostBook
from gist_core.runner.downstream import run_downstream
from gist_core.runner.pipeline import RESULT_FILES, Run
from gist_core.runner.sharding import ProcessSplit, single_process_env
from gist_core.store.atomic import atomic_path, atomic_write_json
from gist_core.store.layout import COMPARE_REPORT, SCORES, rel_compare
from gist_core.store.reports import stamp


class Compare:
    """Runs (or resumes) GIST's run, then every method's features, selections, downstream runs and costs:
    a sequence of stages over one CompareContext."""

    def __init__(self, run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False,
                 procs: ProcessSplit | None = None, until: str | None = None):
        self.run = Run(run_cfg, out, quiet=quiet, overwrite=overwrite, procs=procs, until=until)
        self.cmp = cmp
        self.test_spec = cmp.test or default_test_split(run_cfg.target)

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
        procs = self.run.procs
        if self.run.until == "prepare":
            return None
        if procs.shard_job:  # this job's share of the LESS pool features; the plain rerun merges and reports
            if "less" in self.cmp.methods:
                less_pool_features_only(self.context())
            return None
        if procs.torchrun:  # the LESS pool features on every rank; the rest on rank 0 alone
            if "less" in self.cmp.methods:
                less_pool_features_only(self.context())
            if not procs.main:
                return None
            self.run.procs = ProcessSplit()
            with single_process_env():
                return self._finish(gist_summary, t0)
        return self._finish(gist_summary, t0)

    def context(self) -> CompareContext:
        inputs = self.run.inputs
        _, model = self.run.tokenizer_and_model()
        n_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # base model only
        tokens = {"pool": sum(map(len, inputs.pool_tok.input_ids)), "target": sum(map(len, inputs.target_tok.input_ids))}
        groups = subtask_groups(inputs.target)
        return CompareContext(run=self.run.ctx, inputs=inputs, cmp=self.cmp, groups=groups,
                              k=scoring.budget_to_count(self.run.cfg.budget, len(inputs.pool)),
                              book=CostBook(self.run.store, self.run.cfg, n_params, tokens, len(inputs.pool)),
                              model_path=self.run.model_source.path, test_spec=self.test_spec)

    def _finish(self, gist_summary: dict, t0: float) -> dict:
        cc = self.context()
        frame = examples_to_frame(cc.inputs.pool, ["id", "skill", "kind"])
        truth = truth_masks(frame, list(cc.groups))
        domains = np.array(domain_labels(cc.inputs.pool))  # a reading aid for every selection: code / math / ...
        rows = self.cmp.rows(truth is not None)
        scores = method_scores(cc)
        selections = select_rows(cc, scores, rows, truth)
        save_scores(cc, frame, scores)
        report = stamp("compare", build_report(cc, rows, scores, selections, gist_summary, truth, domains))
        if self.cmp.downstream:
            run_downstream(cc, rows, selections, report)
        report["wall_s"] = round(time.time() - t0, 2)
        atomic_write_json(cc.run.paths.compare_report, report)
        return report


def method_scores(cc: CompareContext) -> dict[str, scoring.Scores]:
    """Each requested score-based method's scores, by the stage the registry names for it, in the registry's order
    (GIST first: the rows that re-score its projections reuse its cost entries)."""
    wanted = set(cc.cmp.methods)
    return {s.name: registry.load(s.scores)(cc) for s in registry.scorers() if s.name in wanted}


def select_rows(cc: CompareContext, scores: dict[str, scoring.Scores], rows: list[str], truth) -> dict[str, list]:
    """Row -> one index array per seed (the same array for deterministic methods)."""
    n, k, seeds = len(cc.inputs.pool), cc.k, range(cc.cmp.seeds)
    out: dict[str, list[np.ndarray]] = {}
    for row in rows:
        family, rule = split_row(row)
        if family in scores:
            idx = scoring.select(scores[family], k, rule, cc.groups)[0]
        elif row == "random":
            out[row] = [baselines.random_selection(n, k, cc.cfg.seed + s) for s in seeds]
            continue
        elif row == "full":
            idx = np.arange(n)
        elif row == "oracle":
            out[row] = [baselines.oracle_selection(truth.relevant, k, s) for s in seeds]
            continue
        else:
            raise ConfigError(f"no scores for method '{row}'")
        out[row] = [idx] * cc.cmp.seeds
    for row in ("random", "full", "oracle"):
        cc.book.costs.setdefault(row, {"scoring": 0.0})
    return out


def save_scores(cc: CompareContext, frame, scores: dict[str, scoring.Scores]) -> None:
    """compare/scores.parquet: every score-based method's score and subtask columns (what every rule starts from)."""
    df = pd.DataFrame({"id": frame["id"]})
    for name, sc in scores.items():
        df[f"score:{name}"] = sc.score
        names, cols = scoring.subtask_columns(sc, cc.groups)
        for t, sub in enumerate(names):
            df[f"col:{name}:{sub}"] = cols[:, t]
    with atomic_path(cc.run.paths.compare_scores) as tmp:
        df.to_parquet(tmp, index=False)


def run_compare(run_cfg: RunConfig, cmp: CompareConfig, out, quiet: bool = False, overwrite: bool = False) -> dict:
    return Compare(run_cfg, cmp, out, quiet=quiet, overwrite=overwrite).execute()
