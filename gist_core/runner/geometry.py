"""`gist-lab geometry --run RUN`: curvature of one LoRA block at every warm-up checkpoint of a run.

Writes RUN/geometry/ckpt-E.safetensors (hessian, gauss_newton, fisher, adam_v, coordinates) and
RUN/geometry/geometry.json (config, block, per-checkpoint numbers, the validation-gradient spectrum
per epoch). A checkpoint whose file exists with the same key is skipped.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from gist_core.analysis import geometry as g
from gist_core.analysis.curvature import curvature_numbers
from gist_core.config import GeometryConfig, RunConfig
from gist_core.data.examples import load_examples
from gist_core.data.formatting import tokenize_examples
from gist_core.errors import ConfigError
from gist_core.methods.gist.artefacts import load_subspace
from gist_core.methods.gist.subspace import rank_for_variance
from gist_core.methods.less.features import read_moments
from gist_core.runner.pipeline import Run
from gist_core.store.artefacts import load_tensors, save_tensors
from gist_core.store.atomic import atomic_write_json
from gist_core.store.layout import RunLayout, ckpt_meta
from gist_core.store.lock import refuse_if_held, writer_lock
from gist_core.store.manifest import stable_hash
from gist_core.store.reports import read_report, stamp


def spectrum_by_epoch(run_dir: Path, epochs: int) -> list[dict]:
    """r95 / r99 of the validation-gradient spectrum at each warm-up checkpoint (intrinsic dimension)."""
    out = []
    for e in range(1, epochs + 1):
        p = RunLayout(run_dir).subspace(e)
        if p.exists():
            sigma = load_subspace(p, ("sigma",), allow_stale=True).sigma  # 1-D: sound in any format
            out.append({"epoch": e, "r95": rank_for_variance(sigma, 0.95), "r99": rank_for_variance(sigma, 0.99),
                        "n": int(len(sigma)), "sigma_1": float(sigma[0])})
    return out


class Geometry:
    def __init__(self, run_dir, cfg: GeometryConfig, quiet: bool = False):
        self.dir = Path(run_dir)
        if not RunLayout(self.dir).config.exists():
            raise ConfigError(f"{self.dir}: not a run directory (no config.json); run gist-lab select or demo first")
        self.run_cfg = RunConfig.from_json(json.loads(RunLayout(self.dir).config.read_text()))
        self.run = Run(self.run_cfg, self.dir, quiet=quiet)
        self.cfg = cfg
        self.out = RunLayout(self.dir).geometry_dir

    def execute(self) -> dict:
        epochs = self.cfg.checkpoints or tuple(range(1, self.run_cfg.warmup.epochs + 1))
        missing = [e for e in epochs if not ckpt_meta(self.run.ckpt_dir(e)).exists()]
        if missing:
            raise ConfigError(f"{self.dir}: no warm-up checkpoint for epoch(s) {missing}; finish the run first")
        tok, _ = self.run.tokenizer_and_model()
        target = load_examples(self.run_cfg.target, split=self.run_cfg.target_split)[: self.cfg.n_examples]
        toks = tokenize_examples(target, tok, self.run_cfg.target_length, eos=self.run_cfg.target_eos)
        self.out.mkdir(exist_ok=True)
        report_path = RunLayout(self.dir).geometry_report
        old = read_report(report_path, "geometry") or {}
        report = stamp("geometry", {"config": asdict(self.cfg), "n_examples": len(target), "checkpoints": {},
                  "spectrum": spectrum_by_epoch(self.dir, self.run_cfg.warmup.epochs)})
        for e in epochs:
            key = stable_hash([self.run.keys["warmup"], asdict(self.cfg), e])
            path = RunLayout(self.dir).geometry_matrices(e)
            prev = old.get("checkpoints", {}).get(str(e))
            if prev and prev.get("key") == key and path.exists():
                report["checkpoints"][str(e)] = prev
                self.run.store.event(f"geometry/ckpt-{e}", "skip")
                continue
            with self.run.progress.stage(f"geometry/ckpt-{e}"):
                t0 = time.time()
                model = self.run.adapter_model(e)
                block = g.pick_block(model, self.cfg.module, self.cfg.n_coords, self.cfg.seed)
                fn = g.BlockFunction(model, block, toks.input_ids, toks.labels, tok.pad_token_id)
                H = g.exact_hessian(fn).cpu().double().numpy()
                t_h = time.time() - t0
                GN = g.gauss_newton(fn).cpu().double().numpy()
                Gx = g.per_example_gradients(fn).cpu().double().numpy()
                F = Gx.T @ Gx / len(Gx)
                mom = read_moments(self.run.ckpt_dir(e), [block.name_a, block.name_b],
                                   [int(np.prod(block.shape_a)), int(np.prod(block.shape_b))])
                v = torch.cat([mom.v[: int(np.prod(block.shape_a))][torch.as_tensor(block.idx_a)],
                               mom.v[int(np.prod(block.shape_a)):][torch.as_tensor(block.idx_b)]]).double().numpy()
                nums = curvature_numbers(H, GN, F, v, block.n_a, self.cfg.rank)
                self._save(path, H, GN, F, v, block)
            nums.update({"key": key, "module": block.module, "n_coords": block.size, "n_a": block.n_a,
                         "wall_s": round(time.time() - t0, 2), "hessian_s": round(t_h, 2)})
            report["checkpoints"][str(e)] = nums
            atomic_write_json(report_path, report)  # after each checkpoint: resumable
            self.run.log(f"ckpt-{e}: {block.module} ({block.size} coords) Hessian off-diagonal ratio "
                         f"{nums['hessian']['offdiag_ratio']:.3f}, A-B mass {nums['hessian']['mass_AB']:.3f}, "
                         f"F/H top-{nums['rank']} overlap {nums['overlap_fisher_hessian']:.3f} "
                         f"(random {nums['overlap_random_reference']:.4f}); {nums['wall_s']:.0f} s")
        atomic_write_json(report_path, report)
        return report

    @staticmethod
    def _save(path: Path, H, GN, F, v, block) -> None:
        tensors = {"hessian": H.astype(np.float32), "gauss_newton": GN.astype(np.float32),
                   "fisher": F.astype(np.float32), "adam_v": v.astype(np.float32),
                   "idx_a": block.idx_a.astype(np.int64), "idx_b": block.idx_b.astype(np.int64)}
        save_tensors(path, tensors, {"module": block.module, "n_a": str(block.n_a),
                                     "shape_a": json.dumps(block.shape_a), "shape_b": json.dumps(block.shape_b)})


def load_matrices(run_dir, epoch: int) -> dict[str, np.ndarray]:
    # Files from before artefact format 2 are read as they are: their matrices are square and symmetric
    # (a scrambled square matrix is its transpose, i.e. itself) and the rest is 1-D, so none came back wrong.
    return load_tensors(RunLayout(run_dir).geometry_matrices(epoch), allow_stale=True)[0]


def run_geometry(run_dir, cfg: GeometryConfig, quiet: bool = False) -> dict:
    refuse_if_held(run_dir)  # at once, before the run's inputs are loaded
    job = Geometry(run_dir, cfg, quiet)
    with writer_lock(run_dir):
        return job.execute()
