"""Downstream evaluation inside a compare: LoRA-train on each selection (per seed), then test loss and exact
match on the target's test split; each run is cached under compare/evals/ by the key of what it depends on.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gist_core.config import TrainConfig
from gist_core.data.examples import load_examples
from gist_core.store import shared
from gist_core.store.atomic import atomic_write_json
from gist_core.store.manifest import file_hash, stable_hash

ADAPTER = "adapter"  # inside a shared downstream entry: the trained LoRA adapter (peft's save_pretrained)


class Downstream:
    """Mixed into Compare: uses its run, configs and store."""

    def downstream(self, rows, selections, report) -> None:
        if self.test_spec is None:
            report["downstream_note"] = ("no test split (pass --test): downstream loss and exact match not measured")
            self.log(report["downstream_note"])
            return
        test = load_examples(self.test_spec)
        test_key = file_hash(self.test_spec) if Path(self.test_spec).exists() else self.test_spec
        recipe = asdict(self.cmp.train)
        report["train_recipe"] = {**recipe, "full_epochs": self.cmp.full_epochs, "lora": asdict(self.cfg.lora),
                                  "max_length": self.cfg.max_length, "test_max_length": self.cfg.target_length,
                                  "seeds": list(range(self.cmp.seeds)),
                                  "trained_model": self.trained_model()}
        report["base"] = self._eval_cached("base", None, None, test, test_key)
        for row in rows:
            runs = []
            for s, idx in enumerate(selections[row]):
                runs.append(self._eval_cached(f"{row}-s{s}", idx, s, test, test_key,
                                              epochs=self.cmp.full_epochs if row == "full" else None))
            e = report["methods"][row]
            losses, ems = [r["test_loss"] for r in runs], [r["exact_match"] for r in runs]
            e.update({"test_loss": float(np.mean(losses)), "test_loss_std": float(np.std(losses)),
                      "exact_match": _mean(ems), "exact_match_std": _std(ems),
                      "train_steps": runs[0]["steps"], "train_s": float(np.mean([r["train_s"] for r in runs])),
                      "per_seed": [{"seed": s, "test_loss": r["test_loss"], "exact_match": r["exact_match"]}
                                   for s, r in enumerate(runs)],
                      "per_subtask": {sub: {"loss": float(np.mean([r["per_subtask"][sub]["loss"] for r in runs])),
                                            "exact_match": _mean([r["per_subtask"][sub]["exact_match"] for r in runs])}
                                      for sub in runs[0]["per_subtask"]}})
            em = "not measured" if e["exact_match"] is None else f"{e['exact_match']:.3f} ± {e['exact_match_std']:.3f}"
            self.log(f"{row:14s} test loss {e['test_loss']:.3f} ± {e['test_loss_std']:.3f}  exact match {em}")
            atomic_write_json(self.run.paths.compare_report, report)  # partial table, readable while it runs

    def trained_model(self) -> str:
        """The model fine-tuned on each selection: the run's own, or, when the run selected with an Iprox
        proxy, the target the proxy was built from (the point of a proxy: select cheaply, train the target)."""
        from gist_core.methods.iprox.store import proxy_target
        return proxy_target(self.run.model_source.path) or self.run.model_source.path

    def _eval_cached(self, name, idx, seed, test, test_key, epochs=None) -> dict:
        from gist_core.model.evaluate import evaluate_on_target
        cfg = self.cmp.train if seed is None else TrainConfig(**{**asdict(self.cmp.train), "seed": seed,
                                                                   **({"epochs": epochs} if epochs else {})})
        key = stable_hash([self.run.keys["data"], self.run.fingerprints["model"], test_key, asdict(cfg),
                           self.cfg.lora.key(), self.cfg.max_length, self.cmp.n_em,
                           None if idx is None else stable_hash(np.asarray(idx).tolist())]
                          + ([self.cmp.em_tokens] if self.cmp.em_tokens != 16 else [])
                          + ([self.cfg.target_max_length] if self.cfg.target_max_length else []))
        path = self.run.paths.compare_eval(name)
        if path.exists():
            old = json.loads(path.read_text())
            if old.get("key") == key:
                return old
        path.parent.mkdir(parents=True, exist_ok=True)
        with self.run.progress.stage(f"compare/eval/{name}"):
            if idx is None and self.trained_model() == self.run.model_source.path:
                tok, _ = self.run.tokenizer_and_model()
                res = {**evaluate_on_target(self.run.base_model(), tok, test, self.cfg.target_length, self.cmp.n_em,
                                            self.cmp.em_tokens), "steps": 0, "train_s": 0.0}
            elif idx is None:
                from gist_core.model.load import load_base_model
                model, tok = load_base_model(self.trained_model())
                res = {**evaluate_on_target(model, tok, test, self.cfg.target_length, self.cmp.n_em, self.cmp.em_tokens),
                       "steps": 0, "train_s": 0.0}
            else:
                model, tok, facts, where = self.trained_adapter(idx, cfg)
                res = {**evaluate_on_target(model, tok, test, self.cfg.target_length, self.cmp.n_em, self.cmp.em_tokens),
                       **facts, "adapter": str(where)}
        res["key"] = key
        atomic_write_json(path, res)
        return res


    def trained_adapter(self, idx, cfg: TrainConfig):
        """(model with the adapter, tokenizer, training facts, the adapter's folder): the LoRA trained on pool rows
        `idx` with `cfg`. Adapters are kept under the runs folder's .shared/ by what they depend on (model, pool,
        rows, recipe, LoRA, length), so a selection two methods, budgets or targets share (random, the full pool,
        identical rankings) is trained once, and the adapter behind every downstream number can be read back."""
        from gist_core.model.evaluate import finetune
        from gist_core.model.load import load_adapter, load_base_model
        trained = self.trained_model()
        model_key = self.run.fingerprints["model"] if trained == self.run.model_source.path else file_hash(trained)
        key = "adapter-" + stable_hash([self.run.keys["pool"], model_key, asdict(cfg), self.cfg.lora.key(),
                                        self.cfg.max_length, stable_hash(np.asarray(idx).tolist())])
        found = shared.get(self.store.root, key)
        if found is not None:
            folder, facts = found
            model, tok = load_base_model(trained)
            return load_adapter(model, folder / ADAPTER).eval(), tok, {**facts, "adapter_shared": True}, folder / ADAPTER
        model, tok, facts = finetune(trained, [self.run.inputs.pool[i] for i in idx], cfg, self.cfg.lora,
                                     self.cfg.max_length)
        folder = shared.put(self.store.root, key, lambda tmp: model.save_pretrained(tmp / ADAPTER), facts)
        return model, tok, facts, folder / ADAPTER


def _mean(values: list) -> float | None:
    """Mean over seeds; None when a seed did not measure it (exact match with --n-em 0)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def _std(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.std(values))
