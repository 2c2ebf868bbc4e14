"""Peak resident memory of one batch of per-example gradients (projected, as `select` does) beside a training step
and a forward pass without gradients, against the batch's padded tokens: where a real model's memory goes.

Each (side, rows) runs in a fresh process that loads the model, LoRA, the rows and a (D, 65) basis, resets the
resident set's high-water mark (Linux /proc/self/clear_refs) and runs one batch of the `rows` longest rows.

    python bench/grad_memory.py --model smollm2-135m --pool sharegpt --rows 2 4 8 16 --out runs/grad-memory
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from gist_core.config import LoraSettings
from gist_core.data.examples import load_examples
from gist_core.data.formatting import IGNORE, tokenize_examples
from gist_core.data.registry import registry_file
from gist_core.grads.per_example import GradientEngine, causal_lm_losses, pad_batch
from gist_core.memory import peak_bytes, reset_peak
from gist_core.model.load import attach_lora, load_base_model
from gist_core.store.atomic import atomic_write_json

SIDES = ("projected", "train", "forward")


def one(model_spec: str, pool: str, rows: int, side: str, max_length: int) -> dict:
    model, tok = load_base_model(model_spec)
    peft = attach_lora(model, LoraSettings(), seed=0).eval()
    examples = load_examples(registry_file(pool) or pool, limit=400)
    toks = tokenize_examples(examples, tok, max_length)
    longest = sorted(range(len(examples)), key=lambda i: (-len(toks.input_ids[i]), i))[:rows]
    ids, lab = [toks.input_ids[i] for i in longest], [toks.labels[i] for i in longest]
    engine = GradientEngine(peft, tok.pad_token_id)
    basis = torch.linalg.qr(torch.randn(engine.dim, 65, generator=torch.Generator().manual_seed(0)))[0]
    i, lb, att = pad_batch(ids, lab, tok.pad_token_id, engine.device)
    before = reset_peak()
    if side == "projected":
        engine.projected_grads(ids, lab, basis, with_norms=True)
    elif side == "train":
        params = [p for p in peft.parameters() if p.requires_grad]
        torch.autograd.grad(causal_lm_losses(peft, i, lb, att, engine.trim_logits).mean(), params)
    else:
        with torch.no_grad():
            causal_lm_losses(peft, i, lb, att, engine.trim_logits)
    return {"rows": rows, "side": side, "padded_tokens": int(i.numel()),
            "response_tokens": int(sum(sum(y != IGNORE for y in row) for row in lab)),
            "gradient_dim": engine.dim, "before_bytes": before, "peak_bytes": peak_bytes()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--pool", default="sharegpt", help="a data-registry name or a JSONL file")
    p.add_argument("--rows", type=int, nargs="+", default=[2, 4, 8, 16])
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--out", type=Path)
    p.add_argument("--one", nargs=2, metavar=("ROWS", "SIDE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.one:
        print(json.dumps(one(a.model, a.pool, int(a.one[0]), a.one[1], a.max_length)))
        return
    if not a.out:
        p.error("--out is required")
    results = []
    for side in a.sides:
        for rows in a.rows:
            cmd = [sys.executable, __file__, "--model", a.model, "--pool", a.pool, "--max-length", str(a.max_length),
                   "--one", str(rows), side]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"error: {side} at {rows} rows failed: {done.stderr.strip().splitlines()[-1:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = results[-1]
            print(f"{side:9s} {rows:3d} rows x {r['padded_tokens'] // rows:4d} tokens: peak "
                  f"{r['peak_bytes'] / 1e9:.2f} GB (before {r['before_bytes'] / 1e9:.2f} GB)", flush=True)
    a.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out / "grad_memory.json", {"model": a.model, "pool": a.pool, "max_length": a.max_length,
                                                   "results": results})


if __name__ == "__main__":
    main()
