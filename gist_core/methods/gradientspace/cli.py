"""`gist-lab cluster` and `gist-lab experts`: GradientSpace's commands (registered in gist_core/methods/registry.py)."""
from __future__ import annotations

from gist_core.methods.gradientspace.cluster_stage import run_cluster
from gist_core.methods.gradientspace.config import cluster_config, expert_config
from gist_core.methods.gradientspace.experts_stage import run_experts
from gist_core.store.layout import RunLayout


def cluster(a) -> int:
    rep = run_cluster(a.run, cluster_config(a), quiet=a.quiet)
    if rep["k_curve"]:
        print("k by silhouette: " + ", ".join(f"{c['k']}: {c['silhouette']:.3f}" for c in rep["k_curve"]))
    print(f"{rep['n_rows']} pool rows, k = {rep['k']} (GradientSpace is a reconstruction from the abstract)")
    print(f"{'method':<14} {'ARI':>6} {'NMI':>6} {'purity':>7} {'sizes':>10} {'within-var':>10}")
    for m, r in rep["table"].items():
        print(f"{m:<14} {r['ari']:>6.3f} {r['nmi']:>6.3f} {r['purity']:>7.3f} {r['size_min']:>4}-{r['size_max']:<5} "
              f"{r['within_var_coords']:>10.3f}")
    print(f"walls (s): {rep['walls_s']}")
    print(f"written: {RunLayout(a.run).clusters_report}")
    return 0


def experts(a) -> int:
    rep = run_experts(a.run, expert_config(a), quiet=a.quiet)
    print(f"{rep['n_rows']} clustered rows → experts; {rep['n_tests']} test examples ({', '.join(rep['test_sets'])}); "
          f"{rep['seeds_done']} seed(s)")
    print(f"{'rule':<24} {'test loss':>15} {'exact match':>15}")
    for r, v in rep["table"].items():
        print(f"{r:<24} {v['test_loss']:>8.3f} ± {v['test_loss_std']:.3f} {v['exact_match']:>8.3f} ± {v['exact_match_std']:.3f}")
    for m, v in rep["routing"].items():
        print(f"routing accuracy ({m}): router {v['router_accuracy']:.3f}, "
              f"ensemble's top weight {v['ensemble_top_accuracy']:.3f}")
    if rep["latency_ms"]:
        print("latency per query (ms, median): " + ", ".join(f"{r} {t:.1f}" for r, t in rep["latency_ms"].items()))
    print(f"written: {RunLayout(a.run).experts_report}")
    return 0
