"""`gist-lab train`: GAST's command (registered in gist_core/methods/registry.py)."""
from __future__ import annotations

from gist_core.methods.gast.config import train_config
from gist_core.methods.gast.stages import run_ablation, run_train
from gist_core.store.layout import TrainLayout


def train(a) -> int:
    cfg = train_config(a)
    if a.ablation:
        rep = run_ablation(cfg, a.out, seeds=a.seeds, quiet=a.quiet)
        print(f"{'run':<16} {'test loss':>15} {'exact match':>15} {'ms/step':>9} {'held MB/step':>13} {'peak RSS MB':>12}")
        for name, v in rep["table"].items():
            peak = v.get("cpu_peak_rss_bytes")
            print(f"{name:<16} {v['test_loss']:>8.3f} ± {v['test_loss_std']:.3f} {v['exact_match']:>8.3f} ± "
                  f"{v['exact_match_std']:.3f} {v['step_ms_median']:>9.1f} {v['held_bytes_per_step'] / 2**20:>13.2f} "
                  f"{'n/a' if peak is None else format(peak / 2**20, '.0f'):>12}")
        print(f"written: {TrainLayout(a.out).ablation_report}")
        return 0
    rep = run_train(cfg, a.out, quiet=a.quiet)
    print(f"{rep['method']} ({rep['implementation']}), seed {rep['seed']}: {rep['steps']} steps on {rep['n_train']} "
          f"examples; test loss {rep['test_loss']:.3f}, exact match {rep['exact_match']:.3f}; "
          f"{rep['step_ms_median']:.1f} ms/step, {rep['train_wall_s']:.0f} s training")
    for s, v in sorted(rep["per_subtask"].items()):
        em = "not measured (--n-em 0)" if v["exact_match"] is None else f"{v['exact_match']:.3f}"
        print(f"  {s:<16} loss {v['loss']:.3f}  exact match {em}")
    print(f"written: {TrainLayout(a.out).report}")
    return 0
