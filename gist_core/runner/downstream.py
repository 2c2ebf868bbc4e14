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
from gist_core.methods.iprox.store import proxy_target
from gist_core.model.evaluate import evaluate_on_target, finetune
from gist_core.model.load import load_adapter, load_base_model
from gist_core.runner.compare_context import CompareContext
from gist_core.store import shared
from gist_core.store.atomic import atomic_write_json
from gist_core.store.manifest import file_hash, stable_hash

ADAPTER = "adapter"  # inside a shared downstream entry: the trained LoRA adapter (peft's save_pretrained)


def run_downstream(cc: CompareContext, rows: list[str], selections: dict, report: dict) -> None:
    """Every row's seeds trained and evaluated (each cached), their means into `report` (written as it goes)."""
    if cc.test_spec is None:
        report["downstream_note"] = ("no test split (pass --test): downstream loss and exact match not measured")
        cc.run.log(report["downstream_note"])
        return
    test = load_examples(cc.test_spec)
    test_key = file_hash(cc.test_spec) if Path(cc.test_spec).exists() else cc.test_spec
    recipe = asdict(cc.cmp.train)
    report["train_recipe"] = {**recipe, "full_epochs": cc.cmp.full_epochs, "lora": asdict(cc.cfg.lora),
                              "max_length": cc.cfg.max_length, "test_max_length": cc.cfg.target_length,
                              "seeds": list(range(cc.cmp.seeds)), "trained_model": trained_model(cc)}
    report["base"] = eval_cached(cc, "base", None, None, test, test_key)
    for row in rows:
        runs = []
        for s, idx in enumerate(selections[row]):
            runs.append(eval_cached(cc, f"{row}-s{s}", idx, s, test, test_key,
                                    epochs=cc.cmp.full_epochs if row == "full" else None))
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
        cc.run.log(f"{row:14s} test loss {e['test_loss']:.3f} ± {e['test_loss_std']:.3f}  exact match {em}")
        atomic_write_json(cc.run.paths.compare_report, report)  # partial table, readable while it runs


def trained_model(cc: CompareContext) -> str:
    """The model fine-tuned on each selection: the run's own, or, when the run selected with an Iprox
    proxy, the target the proxy was built from (the point of a proxy: select cheaply, train the target)."""
    return proxy_target(cc.model_path) or cc.model_path


def eval_cached(cc: CompareContext, name, idx, seed, test, test_key, epochs=None) -> dict:
    """compare/evals/<name>.json: the base model's (idx None) or a selection's LoRA's test loss and exact match,
    kept while its key (data, model, test split, recipe, LoRA, lengths, the selected rows) is unchanged."""
    cfg, cmp, run = cc.cfg, cc.cmp, cc.run
    recipe = cmp.train if seed is None else TrainConfig(**{**asdict(cmp.train), "seed": seed,
                                                          **({"epochs": epochs} if epochs else {})})
    key = stable_hash([run.keys["data"], run.fingerprints["model"], test_key, asdict(recipe), cfg.lora.key(),
                       cfg.max_length, cmp.n_em, None if idx is None else stable_hash(np.asarray(idx).tolist())]
                      + ([cmp.em_tokens] if cmp.em_tokens != 16 else [])
                      + ([cfg.target_max_length] if cfg.target_max_length else []))
    path = run.paths.compare_eval(name)
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("key") == key:
            return old
    path.parent.mkdir(parents=True, exist_ok=True)
    with run.progress.stage(f"compare/eval/{name}"):
        if idx is None and trained_model(cc) == cc.model_path:
            tok, _ = run.tokenizer_and_model()
            res = {**evaluate_on_target(run.base_model(), tok, test, cfg.target_length, cmp.n_em, cmp.em_tokens),
                   "steps": 0, "train_s": 0.0}
        elif idx is None:
            model, tok = load_base_model(trained_model(cc))
            res = {**evaluate_on_target(model, tok, test, cfg.target_length, cmp.n_em, cmp.em_tokens),
                   "steps": 0, "train_s": 0.0}
        else:
            model, tok, facts, where = trained_adapter(cc, idx, recipe)
            res = {**evaluate_on_target(model, tok, test, cfg.target_length, cmp.n_em, cmp.em_tokens),
                   **facts, "adapter": str(where)}
    res["key"] = key
    atomic_write_json(path, res)
    return res


def trained_adapter(cc: CompareContext, idx, recipe: TrainConfig):
    """(model with the adapter, tokenizer, training facts, the adapter's folder): the LoRA trained on pool rows
    `idx` with `recipe`. Adapters are kept under the runs folder's .shared/ by what they depend on (model, pool,
    rows, recipe, LoRA, length), so a selection two methods, budgets or targets share (random, the full pool,
    identical rankings) is trained once, and the adapter behind every downstream number can be read back."""
    run, cfg = cc.run, cc.cfg
    trained = trained_model(cc)
    model_key = run.fingerprints["model"] if trained == cc.model_path else file_hash(trained)
    key = "adapter-" + stable_hash([run.keys["pool"], model_key, asdict(recipe), cfg.lora.key(), cfg.max_length,
                                    stable_hash(np.asarray(idx).tolist())])
    found = shared.get(run.store.root, key)
    if found is not None:
        folder, facts = found
        model, tok = load_base_model(trained)
        return load_adapter(model, folder / ADAPTER).eval(), tok, {**facts, "adapter_shared": True}, folder / ADAPTER
    model, tok, facts = finetune(trained, [cc.inputs.pool[i] for i in idx], recipe, cfg.lora, cfg.max_length)
    folder = shared.put(run.store.root, key, lambda tmp: model.save_pretrained(tmp / ADAPTER), facts)
    return model, tok, facts, folder / ADAPTER


def _mean(values: list) -> float | None:
    """Mean over seeds; None when a seed did not measure it (exact match with --n-em 0)."""
    return None if any(v is None for v in values) else float(np.mean(values))


def _std(values: list) -> float | None:
    return None if any(v is None for v in values) else float(np.std(values))
