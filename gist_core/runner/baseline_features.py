"""The baselines' features inside a compare: LESS (Adam-preconditioned projected gradients over every warm-up
checkpoint), raw-gradient cosine and base-model embeddings. Each is a resumable stage recorded in the run's
manifest; the scores come from gist_core.methods (less, baselines), the costs go into the compare's CostBook.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gist_core.methods import baselines, scoring
from gist_core.runner.progress import skipped
from gist_core.runner.rows import FLUSH_EVERY, StoreSpec
from gist_core.store import shared
from gist_core.store.artefacts import load_npy, load_projections, load_subspace, save_npy
from gist_core.store.layout import embedding_rels, less_train_rel, less_val_rel, meta_of, rel_compare
from gist_core.store.manifest import stable_hash
from gist_core.store.shared import rewrite_meta

SHARED_FACTS = ("wall_s", "moments", "d", "projection_s", "peak_rss_bytes")  # a LESS pool stage's facts another run may reuse


class BaselineFeatures:
    """Mixed into Compare: uses its run, store, config, groups and cost book."""

    def _less_pool_features_on_every_rank(self) -> None:
        own = not self.cmp.less_checkpoints
        for e, ckpt in enumerate(self.less_checkpoint_dirs(), start=1):
            self._less_train_features(e, ckpt, own, self._less_key(ckpt), {"pool_projection": 0.0, "pool_features": 0.0})

    def _less_key(self, ckpt: Path) -> str:
        """The run's own checkpoints by name (the warm-up key pins their content), so `--out runs/x` and
        `--out /abs/runs/x` reuse the same features; users' checkpoints by their resolved path."""
        where = Path(ckpt).name if not self.cmp.less_checkpoints else str(Path(ckpt).resolve())
        return stable_hash([self.run.keys["warmup"], where, self.cmp.less_dim, self.cmp.less_seed])

    def less_checkpoint_dirs(self) -> list[Path]:
        if self.cmp.less_checkpoints:
            return [Path(p) for p in self.cmp.less_checkpoints]
        return [self.run.ckpt_dir(e) for e in range(1, self.cfg.warmup.epochs + 1)]

    def less_scores(self) -> scoring.Scores:
        from gist_core.methods.less import checkpoint_mean_lr, less_per_example, lr_weights
        ckpts = self.less_checkpoint_dirs()
        n, d = len(self.run.inputs.pool), self.cmp.less_dim
        own = not self.cmp.less_checkpoints
        walls = {"warmup": self._warmup_cost(self.cfg.warmup.epochs)[0] if own else 0.0, "val_grads": 0.0,
                 "val_features": 0.0, "pool_features": 0.0, "pool_projection": 0.0, "scoring": 0.0}
        flops = self._warmup_cost(self.cfg.warmup.epochs)[1] if own else 0.0
        train_feats, val_feats, lrs = [], [], []
        for e, ckpt in enumerate(ckpts, start=1):
            key = self._less_key(ckpt)
            lrs.append(checkpoint_mean_lr(ckpt))
            V, dim = self._less_val_features(e, ckpt, own, key, walls)
            val_feats.append(V)
            train_feats.append(self._less_train_features(e, ckpt, own, key, walls))
            flops += (6 * self.n_params * (self.tokens["pool"] + self.tokens["target"])
                      + 2 * dim * d * (n + len(self.run.inputs.target)) + 10 * dim * n)
        t3 = time.time()
        weights, weight_rule = lr_weights(lrs)
        per_example = less_per_example(train_feats, val_feats, weights)
        cols = scoring.group_means(per_example, self.groups)
        walls["scoring"] = time.time() - t3
        self.costs["less"] = walls
        self.flops["less"] = flops + 2 * n * d * len(self.run.inputs.target) * len(ckpts)
        self.bytes["less"] = sum(int(np.prod(f.shape)) * f.dtype.itemsize for f in train_feats)
        self.less_info = {"d": d, "checkpoints": [str(c) for c in ckpts], "mean_lr": lrs, "weights": weights,
                          "weighting": weight_rule, "projector_seed": self.cmp.less_seed}
        return scoring.columns_as_scores(cols, list(self.groups), per_example, self.groups)

    def _less_engine(self, e: int, ckpt: Path, own: bool):
        """Gradient engine at a LESS checkpoint, with the checkpoint's Adam moments in gradient order."""
        from gist_core.grads.per_example import GradientEngine
        from gist_core.methods.less import read_moments
        tok, _ = self.run.tokenizer_and_model()
        engine = GradientEngine(self.run.adapter_model(e) if own else self.run.adapter_model(path=ckpt),
                                tok.pad_token_id)
        moments = read_moments(ckpt, [b.name for b in engine.blocks], [b.size for b in engine.blocks])
        return engine, moments

    def _projector_for(self, dim: int, device):
        """The seeded projector, built once per compare (generating R is seconds; caching it is GBs)."""
        from gist_core.methods.less import RademacherProjector
        if self._projector is None:
            self._projector = RademacherProjector(dim, self.cmp.less_dim, self.cmp.less_seed,
                                                  int(self.cmp.projector_cache_gb * (1 << 30)), device)
        return self._projector

    def _less_val_features(self, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> tuple[np.ndarray, int]:
        """Normalised projected plain validation gradients (stored; recomputed only when missing)."""
        import torch

        from gist_core.grads.per_example import collect_flat
        from gist_core.methods.less import unit_rows
        stage, rel = f"compare/less/val-ckpt-{e}", less_val_rel(e)
        if own:
            walls["val_grads"] += self._val_cost(e)[0]
        # (files of older compare runs hold float16 features: recomputed, so every run scores float32 ones)
        if self.store.stage_done(stage, key) and np.load(self.run.paths.path(rel), mmap_mode="r").dtype == np.float32:
            skipped(self.store, stage)
            entry = self._stage_walls()[stage]
            walls["val_grads"] += entry.get("val_grads_s", 0.0)
            walls["val_features"] += entry["wall_s"]
            return load_npy(self.run.paths.path(rel), np.float32, ndim=2), entry["dim"]
        t0 = time.time()
        if own:  # the run's stored plain gradients at its own checkpoints
            G = load_npy(self.run.paths.val_grads(e), np.float32, ndim=2)
            device = self.run.tokenizer_and_model()[1].device
        else:
            engine, _ = self._less_engine(e, ckpt, own)
            G = collect_flat(engine, self.run.inputs.target_tok, list(range(len(self.run.inputs.target))),
                             self.cfg.grad_batch_size)
            device = engine.device
        t_grads = time.time() - t0 if not own else 0.0
        t1 = time.time()
        V = unit_rows(self._projector_for(G.shape[1], device).project(torch.from_numpy(G))).cpu().numpy()
        save_npy(self.run.paths.path(rel), V, np.float32)  # float32 here and on every rerun (N_v x d: small)
        walls["val_grads"] += t_grads
        walls["val_features"] += time.time() - t1
        self.run.record(stage, key, [rel], time.time() - t1, {"dim": int(G.shape[1]), "val_grads_s": t_grads})
        return V, int(G.shape[1])

    def _less_train_features(self, e: int, ckpt: Path, own: bool, key: str, walls: dict) -> np.ndarray | None:
        """One simulated Adam step per pool example, projected and normalised, into a resumable store.
        Under torchrun every rank fills its rows; None on ranks other than 0."""
        import torch

        from gist_core.grads.per_example import stream
        from gist_core.methods.less import adam_direction, unit_rows
        n, d = len(self.run.inputs.pool), self.cmp.less_dim
        stage, rel = f"compare/less/ckpt-{e}", less_train_rel(e)
        proj_s, source = [0.0], [None]

        spec = StoreSpec(rel, n, d, {"key": key}, "float16")
        pool_key = stable_hash(["less-pool", self.run.keys["pool_warmup"], Path(ckpt).name, d, self.cmp.less_seed]) \
            if own else None
        if pool_key and not self.store.stage_done(stage, key) and self.run.take_shared(stage, key, pool_key, spec.files):
            rewrite_meta(self.store.path(meta_of(rel)), spec.sidecar)

        def work(rows, fs, st):
            engine, moments = self._less_engine(e, ckpt, own)
            source[0] = moments.source
            m, v = moments.m.to(engine.device), moments.v.to(engine.device)
            projector = self._projector_for(engine.dim, engine.device)
            buf_rows, buf, count = [], [], [0]

            def project_buffer():  # project many rows per matmul: a 16-row batch wastes the GEMM
                if buf_rows:
                    tp = time.time()
                    P = unit_rows(projector.project(torch.cat(buf)))
                    proj_s[0] += time.time() - tp
                    fs.write(list(buf_rows), P.cpu().numpy().astype(np.float16))
                    buf_rows.clear()
                    buf.clear()
                    count[0] += 1
                    if count[0] % FLUSH_EVERY == 0:
                        fs.flush()

            def consume(batch, g):
                buf_rows.extend(batch)
                buf.append(adam_direction(g, m, v))
                if len(buf_rows) >= self.cmp.projection_batch:
                    project_buffer()

            stream(engine, self.run.inputs.pool_tok, rows, self.cfg.grad_batch_size, consume, on_batch=st.advance)
            project_buffer()

        fs = self.run.fill_rows(stage, key, spec, work, extra=lambda wall, k: {"moments": source[0], "d": d,
                                                                             "projection_s": round(proj_s[0], 3)})
        if fs is None:
            return None
        entry = self._stage_walls()[stage]
        if pool_key and "shared_from" not in entry:
            shared.publish(self.store.root, pool_key, spec.files, {k: v for k, v in entry.items() if k in SHARED_FACTS})
        walls["pool_projection"] += entry.get("projection_s", 0.0)  # absent in runs made before it was timed
        walls["pool_features"] += entry["wall_s"] - entry.get("projection_s", 0.0)
        return load_npy(fs.path, np.float16, ndim=2, mmap=True)

    def rawcos_scores(self) -> scoring.Scores:
        """cos(g, c_t) over the whole gradient. When GIST's store spans every validation gradient (all of them
        kept as directions) and holds |g|, that is GIST's norm-aware score at the full rank, exactly (one
        definition, and no second pass over the pool); else its own pass computes the dot products and norms."""
        from gist_core.methods.gist.subspace import REL_EPS
        sub = load_subspace(self.run.paths.subspace(self.cfg.checkpoint), ("sigma", "val_coords"))
        stored = load_projections(self.run.paths.train_proj)
        if stored.norms is not None and sub.r_max == int((sub.sigma > REL_EPS * sub.sigma[0]).sum()):
            return self._rawcos_from_gist(sub, stored)
        return self._rawcos_pass()

    def _rawcos_from_gist(self, sub, stored) -> scoring.Scores:
        if "gist" not in self.costs:
            self.gist_scores()
        t0 = time.time()
        sc = scoring.gist_scores(stored.coords, sub.val_coords, self.groups, sub.r_max, "subtask_mean", "normaware",
                                 stored.norms)
        per_example = sc.example_columns()
        self.costs["rawcos"] = {**{k: v for k, v in self.costs["gist"].items() if k != "subspace"},
                                "scoring": time.time() - t0}
        self.flops["rawcos"], self.bytes["rawcos"] = self.flops["gist"], self.bytes["gist"]
        self.rawcos_source = "GIST's projections at full rank (they span every validation gradient)"
        return scoring.columns_as_scores(sc.columns, list(self.groups), per_example, self.groups)

    def _rawcos_pass(self) -> scoring.Scores:
        import torch

        from gist_core.grads.per_example import GradientEngine
        self.rawcos_source = "its own pass over the pool (dot products with each validation gradient, and |g|)"
        e, n = self.cfg.checkpoint, len(self.run.inputs.pool)
        G = load_npy(self.run.paths.val_grads(e), np.float32, ndim=2)
        key = stable_hash([self.run.keys["val_grads"], e, "rawcos"])  # = the warm-up key unless --no-target-eos
        stage = "compare/rawcos"

        spec = StoreSpec(rel_compare("rawcos.npy"), n, G.shape[0] + 1, {"key": key})

        def work(rows, fs, st):
            from gist_core.grads.per_example import stream
            tok, _ = self.run.tokenizer_and_model()
            engine = GradientEngine(self.run.adapter_model(e), tok.pad_token_id)
            Gt = torch.from_numpy(G).to(engine.device)
            stream(engine, self.run.inputs.pool_tok, rows, self.cfg.grad_batch_size,
                   lambda batch, g: fs.write(batch, baselines.rawcos_features(g, Gt).cpu().numpy()),
                   on_batch=st.advance)

        fs = self.run.fill_rows(stage, key, spec, work)
        t1 = time.time()
        gram = G.astype(np.float64) @ G.T.astype(np.float64)
        cols = baselines.rawcos_columns(np.asarray(fs.data), gram, self.groups)
        per_example = baselines.rawcos_per_example(np.asarray(fs.data), gram)
        warm_s, warm_f = self._warmup_cost(e)
        D = G.shape[1]
        self.costs["rawcos"] = {"warmup": warm_s, "val_grads": self._val_cost(e)[0],
                                "pool_features": self._stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
        self.flops["rawcos"] = (warm_f + 6 * self.n_params * (self.tokens["pool"] + self.tokens["target"])
                                + 2 * n * D * (G.shape[0] + 1))
        self.bytes["rawcos"] = n * (G.shape[0] + 1) * 4
        return scoring.columns_as_scores(cols, list(self.groups), per_example, self.groups)

    def embedding_scores(self) -> scoring.Scores:
        """The base model's last hidden state, mean-pooled (the LESS paper's RDS)."""
        return self._embedding_method("embedding", self._hidden_states("mean"),
                                      2 * self.n_params * (self.tokens["pool"] + self.tokens["target"]))

    def rds_scores(self) -> scoring.Scores:
        """RDS+: the same hidden states, pooled with weights that grow with position."""
        return self._embedding_method("rds", self._hidden_states("position"),
                                      2 * self.n_params * (self.tokens["pool"] + self.tokens["target"]))

    def minilm_scores(self) -> scoring.Scores:
        """all-MiniLM-L6-v2 sentence embeddings of each example's prompt and response (22.7 M parameters)."""
        from gist_core.model.embedder import minilm_embeddings

        def embed(examples, _tokenized) -> np.ndarray:
            return minilm_embeddings([f"{ex.prompt}\n\n{ex.response}" for ex in examples])
        return self._embedding_method("minilm", embed, 2 * 22.7e6 * 256 * (len(self.run.inputs.pool)
                                                                          + len(self.run.inputs.target)))

    def _hidden_states(self, pooling: str):
        def embed(_examples, tokenized) -> np.ndarray:
            tok, _ = self.run.tokenizer_and_model()
            model = self.run.base_model()  # the base model, not the warm-up adapter
            return baselines.mean_pooled_embeddings(model, tokenized.input_ids, tok.pad_token_id, pooling=pooling)
        return embed

    def _embedding_method(self, method: str, embed, flops: float) -> scoring.Scores:
        """A resumable stage embedding the pool and the target (`embed(examples, tokenized) -> (N, H)`), then the
        cosines of every pool row with every target example, averaged per subtask."""
        key = stable_hash([self.run.keys["data"], self.run.fingerprints["model"], self.cfg.max_length,
                           "embed" if method == "embedding" else method]
                          + ([self.cfg.target_max_length] if self.cfg.target_max_length else []))
        stage = f"compare/{method}"
        paths = self.run.paths.compare_embeddings(method)
        if not self.store.stage_done(stage, key):
            t0 = time.time()
            with self.run.progress.stage(stage, total=len(self.run.inputs.pool)):
                inputs = ((self.run.inputs.pool, self.run.inputs.pool_tok),
                          (self.run.inputs.target, self.run.inputs.target_tok))
                for path, (examples, toks) in zip(paths, inputs):
                    save_npy(path, embed(examples, toks), np.float32)
            self.run.record(stage, key, list(embedding_rels(method)), time.time() - t0)
        else:
            skipped(self.store, stage)
        t1 = time.time()
        E, Et = (load_npy(p, np.float32, ndim=2) for p in paths)
        per_example = baselines.embedding_per_example(E, Et)
        cols = scoring.group_means(per_example, self.groups)
        self.costs[method] = {"pool_features": self._stage_walls()[stage]["wall_s"], "scoring": time.time() - t1}
        self.flops[method] = flops
        self.bytes[method] = int(E.nbytes)
        return scoring.columns_as_scores(cols, list(self.groups), per_example, self.groups)
