"""The validation-gradient stage: per warm-up checkpoint, the target's per-example gradients and their SVD
(the task subspace), and the repair of a stored subspace that is stale or inconsistent with its gradients."""
from __future__ import annotations

import logging
import time

import numpy as np

from gist_core.errors import ArtefactError, StaleArtefact
from gist_core.methods.gist.subspace import VAL_COORDS_TOL, val_coords_error
from gist_core.runner.progress import skipped
from gist_core.runner.rows import relabel_store
from gist_core.store import layout
from gist_core.store.artefacts import array_digest, load_npy, load_subspace, save_npy, save_subspace
from gist_core.store.manifest import file_hash

log = logging.getLogger(__name__)


class SubspaceStage:
    """Mixed into Run: uses its config, store, paths, keys, progress, model and records."""

    def stage_val_grads(self, epoch: int, target_tok) -> None:
        from gist_core.grads.per_example import GradientEngine, collect_flat
        stage = f"val_grads/ckpt-{epoch}"
        key = self.keys["val_grads"]
        rel = [layout.rel_ckpt(epoch, layout.VAL_GRADS), layout.rel_ckpt(epoch, layout.SUBSPACE)]
        if self.store.stage_done(stage, key):
            problem = self._subspace_problem(rel)
            if problem is None:
                return skipped(self.store, stage)
            return self._refit_subspace(epoch, stage, key, rel, problem)
        tok, _ = self.tokenizer_and_model()
        model = self.adapter_model(epoch)
        t0 = time.time()
        n = len(target_tok.input_ids)
        with self.progress.stage(stage, total=n):
            engine = GradientEngine(model, tok.pad_token_id)
            G = collect_flat(engine, target_tok, list(range(n)), self.cfg.grad_batch_size)
        save_npy(self.store.path(rel[0]), G, np.float32)
        t_sub = time.time()
        sub = self._fit_and_save_subspace(G, rel)
        self.record(stage, key, rel, time.time() - t0,
                    {"dim": int(G.shape[1]), "r_max": sub.r_max, "ortho_error": sub.ortho_error,
                     "subspace_s": round(time.time() - t_sub, 4)})

    def _fit_and_save_subspace(self, G: np.ndarray, rel: list[str]):
        from gist_core.methods.gist.subspace import fit_subspace
        sub = fit_subspace(G, self.cfg.r_max)
        save_subspace(self.store.path(rel[1]), sub)
        return sub

    def _subspace_problem(self, rel: list[str]) -> str | None:
        """None when the stored subspace is sound: format 2 and val_coords == val_grads . basis (a checksum
        with meaning, N_v x D x R); else what is wrong, in a few words."""
        try:
            sub = load_subspace(self.store.path(rel[1]))
        except StaleArtefact:
            return ("written before artefact format 2, when safetensors 0.8 scrambled its non-C-ordered "
                    "target directions")
        except ArtefactError as e:
            return str(e)
        G = load_npy(self.store.path(rel[0]), np.float32, ndim=2)
        err = val_coords_error(G, sub)
        return None if err <= VAL_COORDS_TOL else f"val_coords differ from val_grads . basis (relative error {err:.2g})"

    def _refit_subspace(self, epoch: int, stage: str, key: str, rel: list[str], problem: str) -> None:
        """Recompute a stale or inconsistent subspace from the stored validation gradients (no model needed).
        The basis comes out bit-identical when the gradients are unchanged: then the pool projections onto it
        stay valid and are kept (their store is re-labelled with the basis digest), else they are recomputed."""
        path = self.store.path(rel[1])
        log.warning(f"notice: {rel[1]}: {problem}; recomputing the subspace from the stored validation gradients "
                    "(and the scores after it)")
        self.store.event(stage, "stale", problem=problem)
        try:
            old = load_subspace(path, allow_stale=True)
            old_digest, old_file = array_digest(old.basis), file_hash(path)
        except ArtefactError:
            old_digest = old_file = None
        t0 = time.time()
        sub = self._fit_and_save_subspace(load_npy(self.store.path(rel[0]), np.float32, ndim=2), rel)
        new_digest = array_digest(sub.basis)
        if epoch == self.cfg.checkpoint and old_digest == new_digest:
            if relabel_store(self.paths.train_proj_meta, old_file, new_digest):
                log.warning("notice: the basis is unchanged, so the stored pool projections onto it are kept")
        entry = self.store.manifest()["stages"][stage]
        self.record(stage, key, rel, entry.get("wall_s", 0.0),
                    {k: entry[k] for k in ("dim", "subspace_s") if k in entry} |
                    {"r_max": sub.r_max, "ortho_error": sub.ortho_error, "refit": problem,
                     "refit_s": round(time.time() - t0, 4)})
