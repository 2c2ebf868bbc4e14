"""What each method cost inside a compare: wall seconds per stage as measured, FLOP estimates, feature bytes.

The warm-up is shared: it is counted per method up to the checkpoint that method uses.
"""
from __future__ import annotations

from gist_core.config import RunConfig
from gist_core.store.manifest import RunStore

COST_NOTES = ("wall_s: seconds measured on this machine, per stage; the warm-up is shared and "
              "counted per method up to the checkpoint it uses (GIST: its checkpoint epoch, "
              "LESS: all epochs); flops: estimates (6 x parameters x tokens per forward+backward, "
              "2 x parameters x tokens per forward, plus projections); bytes: the per-example "
              "feature store, the part that grows with the pool")


# the run-folder stages behind each method's features (GIST's variants and raw cosine read GIST's store)
METHOD_STAGES = {"gist": ("warmup", "val_grads/", "train_proj"), "less": ("warmup", "compare/less/"),
                 "rawcos": ("warmup", "val_grads/", "train_proj", "compare/rawcos"), "embedding": ("compare/embedding",),
                 "rds": ("compare/rds",), "minilm": ("compare/minilm",)}


class CostBook:
    """What each method cost: `costs` (method -> cost category -> seconds), `flops` and `bytes` per method family,
    read from the run folder's manifest (stage walls and peaks) and the inputs' sizes."""

    def __init__(self, store: RunStore, cfg: RunConfig, n_params: int, tokens: dict[str, int], n_pool: int):
        self.store, self.cfg, self.n_params, self.tokens, self.n_pool = store, cfg, n_params, tokens, n_pool
        self.costs: dict[str, dict[str, float]] = {}
        self.flops: dict[str, float] = {}
        self.bytes: dict[str, int] = {}

    def stage_walls(self) -> dict:
        return self.store.manifest()["stages"]

    def method_peak(self, family: str) -> int | None:
        """The process's peak resident bytes over the stages that computed a method's features (None: not
        measured, off Linux or for a folder from before peaks were recorded)."""
        prefixes = METHOD_STAGES.get("gist" if family.startswith("gist") else family)
        if prefixes is None:
            return None
        peaks = [e["peak_rss_bytes"] for s, e in self.stage_walls().items()
                 if s.startswith(prefixes) and e.get("peak_rss_bytes")]
        return max(peaks) if peaks else None

    def warmup_cost(self, epochs_used: int) -> tuple[float, float]:
        """(wall s, FLOPs) of the warm-up up to `epochs_used`, prorated by epochs (a later epoch is not needed)."""
        st = self.stage_walls().get("warmup", {})
        share = epochs_used / self.cfg.warmup.epochs
        n_warm = st.get("n_examples", 0)
        tokens_per_example = self.tokens["pool"] / max(1, self.n_pool)
        flops = 6 * self.n_params * tokens_per_example * n_warm * epochs_used
        return st.get("wall_s", 0.0) * share, flops

    def val_cost(self, epoch: int) -> tuple[float, float]:
        st = self.stage_walls().get(f"val_grads/ckpt-{epoch}", {})
        return st.get("wall_s", 0.0) - st.get("subspace_s", 0.0), st.get("subspace_s", 0.0)


def cost_ratios(methods: dict, less_costs: dict) -> dict:
    """GIST over LESS: compute, FLOPs, storage, and compute without LESS's projection (measured side by side)."""
    out = {}
    if "gist" in methods and "less" in methods and methods["less"]["wall_s"] > 0:
        out["compute_ratio_gist_over_less"] = methods["gist"]["wall_s"] / methods["less"]["wall_s"]
        out["flops_ratio_gist_over_less"] = methods["gist"]["flops"] / max(methods["less"]["flops"], 1.0)
        out["storage_ratio_gist_over_less"] = methods["gist"]["bytes"] / max(methods["less"]["bytes"], 1)
        if less_costs.get("pool_projection"):  # how much of LESS's cost is its 8192-d projection
            out["compute_ratio_gist_over_less_without_projection"] = methods["gist"]["wall_s"] / max(
                methods["less"]["wall_s"] - less_costs["pool_projection"] - less_costs["val_features"], 1e-9)
    return out
