"""The baselines' features in a compare's run folder, each stage a function of the compare's context:

    rawcos_scores       reads  GIST's train_proj.npy when it spans every validation gradient (raw cosine is then GIST's
                               norm-aware score at the full rank, exactly); else writes compare/rawcos.npy (N x (N_v + 1):
                               the dot products with each validation gradient, then |g|)
    embedding_scores    writes compare/embed.npy and embed-target.npy: the base model's mean-pooled last hidden state
    rds_scores          writes compare/rds.npy and rds-target.npy: the same, position-weighted (RDS+)
    minilm_scores       writes compare/minilm.npy and minilm-target.npy: all-MiniLM-L6-v2 sentence embeddings
    length_scores       the response length (no files)
"""
from __future__ import annotations

import time

import numpy as np
import torch

from gist_core.grads.per_example import GradientEngine, stream
from gist_core.methods import scoring
from gist_core.methods.baselines import scores as baselines
from gist_core.methods.gist.artefacts import load_projections, load_subspace
from gist_core.methods.gist.stages import compare_scores as gist_compare_scores
from gist_core.methods.gist.subspace import REL_EPS
from gist_core.model.embedder import minilm_embeddings
from gist_core.runner.compare_context import CompareContext
from gist_core.runner.progress import skipped
from gist_core.runner.rows import StoreSpec, fill_rows
from gist_core.store.artefacts import load_npy, save_npy
from gist_core.store.layout import embedding_rels, rel_compare
from gist_core.store.manifest import stable_hash

MINILM_PARAMS = 22.7e6


# ----------------------------------------------------------------------------- raw-gradient cosine
def rawcos_scores(cc: CompareContext) -> scoring.Scores:
    """cos(g, c_t) over the whole gradient. When GIST's store spans every validation gradient (all of them
    kept as directions) and holds |g|, that is GIST's norm-aware score at the full rank, exactly (one
    definition, and no second pass over the pool); else its own pass computes the dot products and norms."""
    sub = load_subspace(cc.run.paths.subspace(cc.cfg.checkpoint), ("sigma", "val_coords"))
    stored = load_projections(cc.run.paths.train_proj)
    if stored.norms is not None and sub.r_max == int((sub.sigma > REL_EPS * sub.sigma[0]).sum()):
        return _rawcos_from_gist(cc, sub, stored)
    return _rawcos_pass(cc)


def _rawcos_from_gist(cc: CompareContext, sub, stored) -> scoring.Scores:
    book = cc.book
    if "gist" not in book.costs:
        gist_compare_scores(cc)
    t0 = time.time()
    sc = scoring.gist_scores(stored.coords, sub.val_coords, cc.groups, sub.r_max, "subtask_mean", "normaware",
                             stored.norms)
    per_example = sc.example_columns()
    book.costs["rawcos"] = {**{k: v for k, v in book.costs["gist"].items() if k != "subspace"},
                            "scoring": time.time() - t0}
    book.flops["rawcos"], book.bytes["rawcos"] = book.flops["gist"], book.bytes["gist"]
    cc.notes["rawcos_from"] = "GIST's projections at full rank (they span every validation gradient)"
    return scoring.columns_as_scores(sc.columns, list(cc.groups), per_example, cc.groups)


def _rawcos_pass(cc: CompareContext) -> scoring.Scores:
    run, book = cc.run, cc.book
    cc.notes["rawcos_from"] = "its own pass over the pool (dot products with each validation gradient, and |g|)"
    e, n = cc.cfg.checkpoint, len(cc.inputs.pool)
    G = load_npy(run.paths.val_grads(e), np.float32, ndim=2)
    key = stable_hash([run.keys["val_grads"], e, "rawcos"])  # = the warm-up key unless --no-target-eos
    stage = "compare/rawcos"
    spec = StoreSpec(rel_compare("rawcos.npy"), n, G.shape[0] + 1, {"key": key})

    def work(rows, fs, st):
        tok, _ = run.tokenizer_and_model()
        engine = GradientEngine(run.adapter_model(e), tok.pad_token_id)
        Gt = torch.from_numpy(G).to(engine.device)
        stream(engine, cc.inputs.pool_tok, rows, cc.cfg.grad_batch_size,
               lambda batch, g: fs.write(batch, baselines.rawcos_features(g, Gt).cpu().numpy()),
               on_batch=st.advance)

    fs = fill_rows(run, stage, key, spec, work)
    t1 = time.time()
    gram = G.astype(np.float64) @ G.T.astype(np.float64)
    cols = baselines.rawcos_columns(np.asarray(fs.data), gram, cc.groups)
    per_example = baselines.rawcos_per_example(np.asarray(fs.data), gram)
    warm_s, warm_f = book.warmup_cost(e)
    D = G.shape[1]
    book.costs["rawcos"] = {"warmup": warm_s, "val_grads": book.val_cost(e)[0],
                            "pool_features": book.stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
    book.flops["rawcos"] = (warm_f + 6 * book.n_params * (book.tokens["pool"] + book.tokens["target"])
                            + 2 * n * D * (G.shape[0] + 1))
    book.bytes["rawcos"] = n * (G.shape[0] + 1) * 4
    return scoring.columns_as_scores(cols, list(cc.groups), per_example, cc.groups)


# ----------------------------------------------------------------------------- embeddings
def embedding_scores(cc: CompareContext) -> scoring.Scores:
    """The base model's last hidden state, mean-pooled (the LESS paper's RDS)."""
    return _embedding_method(cc, "embedding", _hidden_states(cc, "mean"), _forward_flops(cc))


def rds_scores(cc: CompareContext) -> scoring.Scores:
    """RDS+: the same hidden states, pooled with weights that grow with position."""
    return _embedding_method(cc, "rds", _hidden_states(cc, "position"), _forward_flops(cc))


def minilm_scores(cc: CompareContext) -> scoring.Scores:
    """all-MiniLM-L6-v2 sentence embeddings of each example's prompt and response."""
    def embed(examples, _tokenized, on_batch=None) -> np.ndarray:
        E = minilm_embeddings([f"{ex.prompt}\n\n{ex.response}" for ex in examples])
        if on_batch:
            on_batch(len(examples))
        return E
    return _embedding_method(cc, "minilm", embed, 2 * MINILM_PARAMS * 256 * (len(cc.inputs.pool) + len(cc.inputs.target)))


def _forward_flops(cc: CompareContext) -> float:
    return 2 * cc.book.n_params * (cc.book.tokens["pool"] + cc.book.tokens["target"])


def _hidden_states(cc: CompareContext, pooling: str):
    def embed(_examples, tokenized, on_batch=None) -> np.ndarray:
        tok, _ = cc.run.tokenizer_and_model()
        model = cc.run.base_model()  # the base model, not the warm-up adapter
        return baselines.mean_pooled_embeddings(model, tokenized.input_ids, tok.pad_token_id, pooling=pooling,
                                                on_batch=on_batch)
    return embed


def _embedding_method(cc: CompareContext, method: str, embed, flops: float) -> scoring.Scores:
    """A resumable stage embedding the pool and the target (`embed(examples, tokenized, on_batch) -> (N, H)`,
    `on_batch(n)` after every n pool rows: the progress bar), then the
    cosines of every pool row with every target example, averaged per subtask."""
    run, cfg, book = cc.run, cc.cfg, cc.book
    key = stable_hash([run.keys["data"], run.fingerprints["model"], cfg.max_length,
                       "embed" if method == "embedding" else method]
                      + ([cfg.target_max_length] if cfg.target_max_length else []))
    stage = f"compare/{method}"
    paths = run.paths.compare_embeddings(method)
    if not run.store.stage_done(stage, key):
        t0 = time.time()
        with run.progress.stage(stage, total=len(cc.inputs.pool)) as st:
            save_npy(paths[0], embed(cc.inputs.pool, cc.inputs.pool_tok, st.advance), np.float32)
            save_npy(paths[1], embed(cc.inputs.target, cc.inputs.target_tok, None), np.float32)
        run.record(stage, key, list(embedding_rels(method)), time.time() - t0)
    else:
        skipped(run.store, stage)
    t1 = time.time()
    E, Et = (load_npy(p, np.float32, ndim=2) for p in paths)
    per_example = baselines.embedding_per_example(E, Et)
    cols = scoring.group_means(per_example, cc.groups)
    book.costs[method] = {"pool_features": book.stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
    book.flops[method] = flops
    book.bytes[method] = int(E.nbytes)
    return scoring.columns_as_scores(cols, list(cc.groups), per_example, cc.groups)


def length_scores(cc: CompareContext) -> scoring.Scores:
    t0 = time.time()
    sc = baselines.length_scores(np.asarray(cc.inputs.pool_tok.n_response_tokens), cc.groups)
    cc.book.costs["length"] = {"scoring": time.time() - t0}
    return sc
