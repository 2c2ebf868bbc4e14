"""`gist-lab experts --run RUN`: one LoRA expert per cluster, a router, the ELREA ensemble (GradientSpace part 3).

On top of `gist-lab cluster` (its rows and labels), per seed:
  single     one LoRA on every clustered row (also the ensemble's base adapter);
  experts    one LoRA per cluster of each clustering in `clusterings`, same recipe;
and, once: a router per clustering (prompt embedding → cluster) and the ELREA weights of every test query.
Every test example is scored under each inference rule:
  base       no adapter;  single;
  M-routed   the expert the router picks (GradientSpace's rule: one expert per query);
  M-oracle   the expert of the cluster with most rows of the query's true skill (what a perfect router gets);
  M-ensemble ELREA's rule: β·logits(single) + (1 − β)·Σ_c w_c·logits(expert c), w from gradient similarity.
Test sets: the bundled targets' test splits and held-out pool rows (not clustered) of every skill.
Adapters, router, features and per-seed evaluations are saved as they are made; a rerun resumes.
Writes RUN/experts/experts.json.
"""
from __future__ import annotations

import json
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from gist_core.config import TrainConfig
from gist_core.data.corpus import SAMPLE_DATA
from gist_core.data.examples import load_examples
from gist_core.data.formatting import encode_pair
from gist_core.data.registry import default_test_split
from gist_core.errors import ConfigError
from gist_core.grads.per_example import length_sorted_batches
from gist_core.methods.baselines.scores import mean_pooled_embeddings
from gist_core.methods.gradientspace import ensemble
from gist_core.methods.gradientspace.cluster_stage import Cluster, cached_npy
from gist_core.methods.gradientspace.config import ClusterConfig, ExpertConfig
from gist_core.methods.gradientspace.report import aggregate, first_per_group, summarise, train_steps
from gist_core.methods.gradientspace.router import PromptRouter, cluster_skills, confusion, oracle_routes, routing_accuracy
from gist_core.model.evaluate import answer_only_labels
from gist_core.model.load import attach_lora, load_base_model
from gist_core.model.mixture import AdapterBank, decode, rule_losses
from gist_core.model.training import train_lora
from gist_core.runner.context import RunContext, RunInputs
from gist_core.runner.pipeline import open_run
from gist_core.store.artefacts import load_npy, load_tensors, save_tensors
from gist_core.store.atomic import atomic_folder, atomic_write_json
from gist_core.store.layout import RunLayout
from gist_core.store.lock import refuse_if_held, writer_lock
from gist_core.store.manifest import file_hash, stable_hash
from gist_core.store.reports import check_report, read_report, stamp

KEY_FILE = "gist_key.txt"
TRAIN_FILE = "train.json"


def prompt_part(ids: list[int], labels: list[int]) -> list[int]:
    """The tokens before the first answer token: what a query is at inference time."""
    n = next((i for i, lab in enumerate(labels) if lab != -100), len(ids))
    return list(ids[:n])


class Experts:
    """One LoRA expert per cluster of a finished `gist-lab cluster`: `Experts(ctx, inputs, cfg)` with the run's
    context and inputs, or `Experts.open(run_dir, cfg)`. The clustering's own passes (its gradient engine and
    ELREA projection, for routing queries) come from a Cluster stage over the same context."""

    def __init__(self, ctx: RunContext, inputs: RunInputs, cfg: ExpertConfig):
        self.ctx, self.inputs, self.cfg = ctx, inputs, cfg
        self.dir, self.paths, self.run_cfg = ctx.paths.root, ctx.paths, ctx.cfg
        self.clusters = clustering_report(self.paths, cfg)
        ccfg = self.clusters["config"]
        self.cl = Cluster(ctx, inputs, ClusterConfig(**{**ccfg, "k_grid": tuple(ccfg["k_grid"])}))
        self.rows = load_npy(self.paths.clusters_array("rows"), np.int64, ndim=1)
        self.labels = {m: load_npy(self.paths.clusters_array(f"labels-{m}"), np.int64, shape=(len(self.rows),))
                       for m in cfg.clusterings}
        self.ids = {m: sorted(int(c) for c in np.unique(lab)) for m, lab in self.labels.items()}
        pool = self.inputs.pool
        self.truth = [pool[int(r)].skill or "?" for r in self.rows]
        self.walls: dict[str, float] = {}

    @classmethod
    def open(cls, run_dir, cfg: ExpertConfig, quiet: bool = False) -> Experts:
        clustering_report(RunLayout(Path(run_dir)), cfg)  # no clustering: say so before the run's inputs load
        return cls(*open_run(run_dir, quiet), cfg)

    def log(self, msg: str) -> None:
        self.ctx.log(msg)

    # ------------------------------------------------------------------ test sets
    def test_specs(self) -> list[str]:
        if self.cfg.tests:
            return list(self.cfg.tests)
        if Path(self.run_cfg.train).resolve() == (SAMPLE_DATA / "pool.jsonl").resolve():
            return [str(p) for p in sorted(SAMPLE_DATA.glob("targets/*/test.jsonl"))]
        own = default_test_split(self.run_cfg.target)
        return [own] if own else []

    def tests(self) -> list:
        """Test examples; `subtask` = 'SET/skill' (the table's groups), `skill` = the ground truth routing is scored on."""
        out = []
        for spec in self.test_specs():
            p = Path(spec)
            name = p.parent.name if p.stem == "test" else p.stem
            split = [replace(ex, subtask=f"{name}/{ex.subtask or ex.skill or 'all'}", skill=ex.skill or ex.subtask)
                     for ex in load_examples(spec)]
            keep = first_per_group([ex.subtask for ex in split], self.cfg.per_subtask or len(split))
            out += [split[i] for i in keep]
        pool, seen = self.inputs.pool, set(self.rows.tolist())
        by_skill: dict[str, list[int]] = defaultdict(list)
        order = np.random.default_rng(self.cl.cfg.seed + 1).permutation(len(pool))
        for r in order:
            ex = pool[int(r)]
            if int(r) not in seen and ex.skill and ex.kind in (None, "correct") and len(by_skill[ex.skill]) < self.cfg.per_skill:
                by_skill[ex.skill].append(int(r))
        for skill in sorted(by_skill):
            out += [replace(pool[r], subtask=f"pool/{skill}") for r in sorted(by_skill[skill])]
        if not out:
            raise ConfigError("no test examples: pass --test FILE (JSONL with prompt, response, subtask)")
        return out

    def encoded(self, tests) -> tuple[list[list[int]], list[list[int]]]:
        tok, _ = self.ctx.tokenizer_and_model()
        enc = [encode_pair(tok, ex.prompt, ex.response, self.run_cfg.max_length, ex.messages) for ex in tests]
        return [e[0] for e in enc], answer_only_labels([e[1] for e in enc], tok.eos_token_id)

    # ------------------------------------------------------------------ features (once)
    def features(self, tests, ids, labels) -> dict[str, np.ndarray]:
        """Prompt embeddings of the clustered rows and the queries (the router's input), the queries' ELREA
        gradients (instruction tokens, the clustering's random projection), cached under experts/."""
        tok, _ = self.ctx.tokenizer_and_model()
        pool_tok = self.inputs.pool_tok
        base_key = stable_hash([self.ctx.keys["warmup"], self.run_cfg.checkpoint, self.rows.tolist()])
        q_key = stable_hash([base_key, [x for x in ids]])
        prompts_train = [prompt_part(pool_tok.input_ids[r], pool_tok.labels[r]) for r in self.rows]
        queries = [prompt_part(x, y) for x, y in zip(ids, labels)]

        def embed(seqs):
            def go():
                t0 = time.time()
                self.cl._engine = None  # base_model() takes the warm-up adapter off the shared model
                E = mean_pooled_embeddings(self.ctx.base_model(), seqs, tok.pad_token_id).astype(np.float32)
                self.walls["embed"] = self.walls.get("embed", 0.0) + round(time.time() - t0, 2)
                return E
            return go
        out = {"embed_train": cached_npy(self.paths.experts_array("embed-train"), stable_hash([base_key, "prompt-embed"]),
                                         embed(prompts_train)),
               "embed_query": cached_npy(self.paths.experts_array("embed-query"), stable_hash([q_key, "prompt-embed"]),
                                         embed(queries))}
        out["elrea_query"] = cached_npy(self.paths.experts_array("elrea-query"),
                                        stable_hash([q_key, self.cl.cfg.elrea_dim, self.cl.cfg.seed, "elrea"]),
                                        lambda: self.query_gradients(queries))
        out["elrea_train"] = load_npy(self.paths.clusters_array("elrea"), np.float32, shape=(len(self.rows), None))
        return out

    def query_gradients(self, queries) -> np.ndarray:
        """(n, elrea_dim): each query's instruction-token gradient at the warm-up checkpoint, projected like the
        ELREA clustering features (the same rows of instruction_labels, the same seeded projection)."""
        t0 = time.time()
        engine = self.cl.engine()
        R = torch.from_numpy(np.ascontiguousarray(self.cl.elrea_projection().T)).to(engine.device)
        out = np.zeros((len(queries), R.shape[1]), np.float32)
        for batch in length_sorted_batches([len(q) for q in queries], range(len(queries)), self.cl.cfg.batch_size):
            qs = [queries[i] for i in batch]
            out[batch] = engine.projected_grads(qs, [list(q) for q in qs], R)[0].cpu().numpy()
        self.walls["query_gradients"] = round(time.time() - t0, 2)
        return out

    def routers(self, feats) -> dict[str, PromptRouter]:
        """One router per clustering on the rows' prompt embeddings (deterministic: it does not vary by seed)."""
        out = {}
        for m in self.cfg.clusterings:
            path = self.paths.expert_router(m)
            key = stable_hash([self.cfg.router, self.labels[m].tolist(), file_hash(self.paths.experts_array("embed-train"))])
            if path.exists():
                arrays, meta = load_tensors(path)
                if meta.get("key") == key:
                    out[m] = PromptRouter.from_arrays(arrays)
                    continue
            out[m] = PromptRouter.fit(feats["embed_train"], self.labels[m], self.cfg.router, seed=0)
            save_tensors(path, out[m].arrays(), {"key": key, "router": self.cfg.router})
        return out

    def weights(self, feats) -> dict[str, np.ndarray]:
        """Per clustering, (n_queries, C) ELREA weights from the standardised gradient cosines to its centroids."""
        out = {}
        for m in self.cfg.clusterings:
            cents = ensemble.centroids(feats["elrea_train"], self.labels[m], self.ids[m])
            mu, sd = ensemble.member_stats(feats["elrea_train"], self.labels[m], cents, self.ids[m])
            out[m] = ensemble.weights(feats["elrea_query"], cents, mu, sd, self.cfg.temperature)
        return out

    # ------------------------------------------------------------------ adapters
    def train_cfg(self, seed: int, n_rows: int) -> TrainConfig:
        """The recipe for one adapter on `n_rows` rows; under expert_steps='match' its epochs are scaled so it
        takes about as many optimizer steps as the single LoRA on every clustered row."""
        epochs = self.cfg.train.epochs
        if self.cfg.expert_steps == "match" and n_rows:
            epochs = max(epochs, round(epochs * len(self.rows) / n_rows))
        return TrainConfig(**{**asdict(self.cfg.train), "seed": seed, "epochs": epochs})

    def adapter(self, seed: int, name: str, rows: np.ndarray) -> Path:
        """Train (or find) one LoRA adapter on pool `rows`; saved atomically with the key of what made it."""
        path = self.paths.expert_adapter(seed, name)
        cfg = self.train_cfg(seed, len(rows))
        key = stable_hash([self.ctx.keys["data"], self.ctx.fingerprints["model"], asdict(cfg), self.run_cfg.lora.key(),
                           self.run_cfg.max_length, np.asarray(rows).tolist()])
        if (path / KEY_FILE).exists() and (path / KEY_FILE).read_text() == key:
            return path
        t0 = time.time()
        model, tok = load_base_model(self.ctx.models.folder, self.run_cfg.dtype, self.run_cfg.device)
        peft_model = attach_lora(model, self.run_cfg.lora, seed=seed)
        pool_tok = self.inputs.pool_tok
        res = train_lora(peft_model, [pool_tok.input_ids[r] for r in rows], [pool_tok.labels[r] for r in rows],
                         tok.pad_token_id, cfg)
        with atomic_folder(path) as tmp:
            peft_model.save_pretrained(tmp)
            (tmp / TRAIN_FILE).write_text(json.dumps({"n_examples": len(rows), "steps": res["steps"],
                                                      "train_loss": res["train_loss"], "wall_s": time.time() - t0}) + "\n")
            (tmp / KEY_FILE).write_text(key)
        return path

    def members(self) -> list[tuple[str, str | None, np.ndarray]]:
        """(adapter name, clustering or None, pool rows) of every adapter of one seed; 'single' first."""
        out = [("single", None, self.rows)]
        for m in self.cfg.clusterings:
            out += [(f"{m}-c{c}", m, self.rows[self.labels[m] == c]) for c in self.ids[m]]
        return out

    def train_seed(self, seed: int) -> dict[str, Path]:
        members = self.members()
        with self.ctx.progress.stage(f"experts/train/s{seed}", total=len(members)) as st:
            paths = {}
            for name, _, rows in members:
                paths[name] = self.adapter(seed, name, rows)
                if st is not None and hasattr(st, "advance"):
                    st.advance(1)
        # what making this seed's adapters cost, from their own records (also when a rerun found them made)
        self.walls[f"train_s{seed}"] = round(sum(json.loads((p / TRAIN_FILE).read_text())["wall_s"]
                                                 for p in paths.values()), 2)
        return paths

    def bank(self, paths: dict[str, Path]) -> AdapterBank:
        base, _ = load_base_model(self.ctx.models.folder, self.run_cfg.dtype, self.run_cfg.device)
        return AdapterBank(base, paths)

    # ------------------------------------------------------------------ evaluation of one seed
    def rules(self, routes: dict[str, np.ndarray], W: dict[str, np.ndarray], n: int,
              oracle: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Each inference rule as an (n, 1 + members) weight matrix over [base, single, experts...]."""
        names = [name for name, _, _ in self.members()]
        col = {name: j + 1 for j, name in enumerate(names)}
        out = {}
        for rule in ("base", "single"):
            M = np.zeros((n, len(names) + 1))
            M[:, 0 if rule == "base" else col["single"]] = 1.0
            out[rule] = M
        for m in self.cfg.clusterings:
            R = np.zeros((n, len(names) + 1))
            R[np.arange(n), [col[f"{m}-c{c}"] for c in routes[m]]] = 1.0
            out[f"{m}-routed"] = R
            if oracle:
                T = np.zeros((n, len(names) + 1))
                T[np.arange(n), [col[f"{m}-c{c}"] for c in oracle[m]]] = 1.0
                out[f"{m}-oracle"] = T
            if m not in self.cfg.ensembles:
                continue
            E = np.zeros((n, len(names) + 1))
            E[:, col["single"]] = self.cfg.base_weight
            for j, c in enumerate(self.ids[m]):
                E[:, col[f"{m}-c{c}"]] = (1 - self.cfg.base_weight) * W[m][:, j]
            out[f"{m}-ensemble"] = E
        return out

    def evaluate_seed(self, seed, paths, tests, ids, labels, rules) -> dict:
        key = stable_hash([[open(p / KEY_FILE).read() for p in paths.values()], ids, labels,
                           {r: stable_hash(M.round(8).tolist()) for r, M in rules.items()},
                           self.cfg.n_em, self.cfg.max_new_tokens])
        path = self.paths.experts_eval(seed)
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return old
        tok, _ = self.ctx.tokenizer_and_model()
        model = self.bank(paths)
        order = [None] + list(paths)
        t0 = time.time()
        losses = rule_losses(model, order, rules, ids, labels, tok.pad_token_id, self.cfg.eval_batch)
        em_set = first_per_group([ex.subtask for ex in tests], self.cfg.n_em)
        prompts = [prompt_part(ids[i], labels[i]) for i in em_set]
        answers = {r: decode(model, order, M[em_set], prompts, tok, self.cfg.max_new_tokens, self.cfg.eval_batch)
                   for r, M in rules.items()}
        res = {"key": key, "seed": seed, "eval_s": round(time.time() - t0, 2), "rules": {}}
        for r in rules:
            hit = {i: float(a == tests[i].response.strip()) for i, a in zip(em_set, answers[r])}
            res["rules"][r] = summarise(tests, losses[r], hit)
            res["rules"][r]["examples"] = [{"prompt": tests[i].prompt, "gold": tests[i].response, "pred": a}
                                           for i, a in list(zip(em_set, answers[r]))[:4]]
        res["train"] = {n: json.loads((p / TRAIN_FILE).read_text()) for n, p in paths.items()}
        if seed == 0 and self.cfg.latency_queries:
            res["latency_ms"] = self.latency(model, order, tests, ids, labels)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, res)
        return res

    def latency(self, model, order, tests, ids, labels) -> dict[str, float]:
        """Median wall time of answering one query (batch 1), from the prompt to the greedy answer, per rule:
        routed includes the prompt embedding and the router; ensemble the query's gradient and its weights."""
        tok, _ = self.ctx.tokenizer_and_model()
        pick = np.linspace(0, len(tests) - 1, self.cfg.latency_queries).round().astype(int)
        routers = self._routers
        engine = self.cl.engine()
        R = torch.from_numpy(np.ascontiguousarray(self.cl.elrea_projection().T)).to(engine.device)
        names = [n for n, _, _ in self.members()]
        col = {n: j + 1 for j, n in enumerate(names)}
        feats_train = load_npy(self.paths.clusters_array("elrea"), np.float32)
        stats = {}
        for m in self.cfg.clusterings:
            cents = ensemble.centroids(feats_train, self.labels[m], self.ids[m])
            stats[m] = (cents, *ensemble.member_stats(feats_train, self.labels[m], cents, self.ids[m]))
        times: dict[str, list[float]] = defaultdict(list)
        for i in pick:
            q = prompt_part(ids[i], labels[i])
            one = np.zeros((1, len(names) + 1))
            t0 = time.perf_counter()
            one[0, col["single"]] = 1
            decode(model, order, one, [q], tok, self.cfg.max_new_tokens, 1)
            times["single"].append(time.perf_counter() - t0)
            for m in self.cfg.clusterings:
                t0 = time.perf_counter()
                with model.model.disable_adapter():
                    e = mean_pooled_embeddings(model.model, [q], tok.pad_token_id)
                c = int(routers[m].route(e)[0])
                one = np.zeros((1, len(names) + 1))
                one[0, col[f"{m}-c{c}"]] = 1
                decode(model, order, one, [q], tok, self.cfg.max_new_tokens, 1)
                times[f"{m}-routed"].append(time.perf_counter() - t0)
                if m not in self.cfg.ensembles:
                    continue
                t0 = time.perf_counter()
                g = engine.projected_grads([q], [list(q)], R)[0].cpu().numpy()
                w = ensemble.weights(g, *stats[m], self.cfg.temperature)
                E = np.zeros((1, len(names) + 1))
                E[0, col["single"]] = self.cfg.base_weight
                for j, c in enumerate(self.ids[m]):
                    E[0, col[f"{m}-c{c}"]] = (1 - self.cfg.base_weight) * w[0, j]
                decode(model, order, E, [q], tok, self.cfg.max_new_tokens, 1)
                times[f"{m}-ensemble"].append(time.perf_counter() - t0)
        return {r: round(1000 * float(np.median(t)), 2) for r, t in times.items()}

    # ------------------------------------------------------------------ the stage
    def execute(self) -> dict:
        self.paths.experts_dir.mkdir(exist_ok=True)
        tests = self.tests()
        ids, labels = self.encoded(tests)
        feats = self.features(tests, ids, labels)
        routers = self._routers = self.routers(feats)
        routes = {m: routers[m].route(feats["embed_query"]) for m in self.cfg.clusterings}
        W = self.weights(feats)
        oracle = ({m: oracle_routes(self.labels[m], self.truth, [ex.skill or "?" for ex in tests], routes[m])
                   for m in self.cfg.clusterings} if self.cfg.oracle_routing else None)
        rules = self.rules(routes, W, len(tests), oracle)
        per_seed = []
        for seed in range(self.cfg.seeds):
            paths = self.train_seed(seed)
            with self.ctx.progress.stage(f"experts/eval/s{seed}"):
                per_seed.append(self.evaluate_seed(seed, paths, tests, ids, labels, rules))
            self.log(f"seed {seed}: " + "  ".join(f"{r} {v['test_loss']:.3f}/{v['exact_match']:.2f}"
                                                  for r, v in per_seed[-1]["rules"].items()))
            self.write_report(tests, routes, W, per_seed)
        return self.write_report(tests, routes, W, per_seed)

    def write_report(self, tests, routes, W, per_seed) -> dict:
        truth = [ex.skill or "?" for ex in tests]
        sets = [ex.subtask.split("/", 1)[0] for ex in tests]
        skills = sorted(set(self.truth) | set(truth))
        routing = {}
        for m in self.cfg.clusterings:
            skill_of = cluster_skills(self.labels[m], self.truth)
            ens_pick = np.asarray(self.ids[m])[np.argmax(W[m], axis=1)]
            routing[m] = {"cluster_skill": {str(c): s for c, s in skill_of.items()},
                          "router_accuracy": routing_accuracy(routes[m], truth, skill_of),
                          "ensemble_top_accuracy": routing_accuracy(ens_pick, truth, skill_of),
                          "router_accuracy_by_set": {s: routing_accuracy(routes[m][np.array(sets) == s],
                                                                         [t for t, x in zip(truth, sets) if x == s], skill_of)
                                                     for s in sorted(set(sets))},
                          "confusion": confusion(routes[m], truth, skills, self.ids[m]).tolist(),
                          "clusters": self.ids[m],
                          "sizes": [int((self.labels[m] == c).sum()) for c in self.ids[m]]}
        rep = stamp("experts", {"config": asdict(self.cfg), "clusters_k": self.clusters["k"],
                                "n_rows": len(self.rows), "n_tests": len(tests), "test_sets": sorted(set(sets)),
                                "skills": skills, "routing": routing, "table": aggregate(per_seed),
                                "seeds_done": len(per_seed), "latency_ms": per_seed[0].get("latency_ms", {}) if per_seed else {},
                                "steps": train_steps(per_seed[0]["train"], self.cfg.clusterings) if per_seed else {},
                                "walls_s": {**self.walls, **{f"eval_s{r['seed']}": r["eval_s"] for r in per_seed}}})
        atomic_write_json(self.paths.experts_report, rep)
        return rep


def clustering_report(paths: RunLayout, cfg: ExpertConfig) -> dict:
    """clusters.json, checked, with every clustering `cfg` trains experts on."""
    if not paths.clusters_report.exists():
        raise ConfigError(f"{paths.root}: no clustering yet (no clusters/clusters.json); run gist-lab cluster first")
    clusters = check_report(read_report(paths.clusters_report, "clusters"), "clusters", str(paths.clusters_report))
    missing = [m for m in cfg.clusterings if m not in clusters["table"]]
    if missing:
        raise ConfigError(f"{paths.clusters_report}: no '{', '.join(missing)}' clustering in it")
    return clusters


# ---------------------------------------------------------------------------- the inference rules
def run_experts(run_dir, cfg: ExpertConfig, quiet: bool = False) -> dict:
    refuse_if_held(run_dir)  # at once, before the run's inputs are loaded
    job = Experts.open(run_dir, cfg, quiet=quiet)
    with writer_lock(run_dir):
        return job.execute()


def load_experts_report(run_dir) -> dict | None:
    return read_report(RunLayout(Path(run_dir)).experts_report, "experts")

