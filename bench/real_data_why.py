"""Why GIST ranks a real-data run the way it does: the figures of docs/benchmarks/real-data.md, "Why GIST ranks
word problems last", from a finished GIST run folder (made by bench/real_data.py or `gist-lab select`).

    python bench/real_data_why.py runs/real-data/gsm8k --check-ranks 1,2,3,1000,1659,1721 --loss-rows 240

1. An independent check of the stored scores: plain transformers + peft on the run's warm-up checkpoint, autograd
   one example at a time, cosine of the pool row's gradient with the mean validation gradient (the score at full
   rank with one target subtask), printed beside the stored score.
2. The spectrum and the ranking under a few variants, from the stored projections alone: the stored score, the
   first direction alone, the first direction dropped; domain shares of the top 5 % and the places of the rows
   that open like grade-school word problems.
3. How the score relates to the row's length and to its loss (a forward pass over a random sample of rows).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from peft import PeftModel
from safetensors.numpy import load_file
from scipy.stats import pearsonr, spearmanr
from transformers import AutoModelForCausalLM, AutoTokenizer

from gist_core.data.domains import domain_labels, domain_shares
from gist_core.data.formatting import IGNORE, encode_pair
from gist_core.model.load import model_folder

WORD_PROBLEM_OPENINGS = ("Sarah invested", "A company has 850", "Calculate area of histogram")


def load_model(run: Path, cfg: dict):
    folder = model_folder(cfg["model"])
    tok = AutoTokenizer.from_pretrained(folder)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder),
                                      str(run / "checkpoints" / f"ckpt-{cfg['checkpoint']}"),
                                      is_trainable=True).eval()  # trainable: its LoRA weights get gradients
    return tok, model


def loss_and_grad(tok, model, prompt: str, response: str, max_length: int, want_grad: bool):
    """Mean token cross-entropy over the response tokens, and its gradient over the LoRA weights (flat, float64)."""
    ids, lab, _ = encode_pair(tok, prompt, response, max_length)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    with torch.set_grad_enabled(want_grad):
        logits = model(input_ids=torch.tensor([ids])).logits[:, :-1].float()
        target = torch.tensor([lab])[:, 1:]
        mask = (target != IGNORE).float()
        tok_loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp_min(0), reduction="none")
        loss = (tok_loss * mask).sum() / mask.sum()
    if not want_grad:
        return loss.item(), None
    grads = torch.autograd.grad(loss, params)
    return loss.item(), torch.cat([g.reshape(-1) for g in grads]).double().numpy()


def naive_check(run: Path, cfg: dict, ranks: list[int], tok, model) -> None:
    target, pool = pd.read_parquet(run / "target.parquet"), pd.read_parquet(run / "examples.parquet").set_index("id")
    scores = pd.read_parquet(run / "scores.parquet")
    val = np.stack([loss_and_grad(tok, model, r.prompt, r.response, cfg["target_max_length"], True)[1]
                    for r in target.itertuples()])
    mean = val.mean(0)
    for rank in ranks:
        row = scores.loc[scores["rank"] == rank].iloc[0]
        ex = pool.loc[row["id"]]
        loss, g = loss_and_grad(tok, model, ex.prompt, ex.response, cfg["max_length"], True)
        naive = g @ mean / np.linalg.norm(g) / np.linalg.norm(mean)
        print(f"rank {rank}: stored {row['score']:.4f}  naive {naive:.4f}  loss {loss:.3f}  {ex.prompt[:50]!r}")


def variants(run: Path, cfg: dict) -> np.ndarray:
    proj = np.load(run / "train_proj.npy").astype(np.float64)
    x, norms = proj[:, :-1], proj[:, -1]
    sub = load_file(str(run / "checkpoints" / f"ckpt-{cfg['checkpoint']}" / "subspace.safetensors"))
    sigma, c = sub["sigma"].astype(np.float64), sub["val_coords"].astype(np.float64).mean(0)
    print(f"sigma[:4] {np.round(sigma[:4], 3)}; first direction's share of the energy "
          f"{sigma[0] ** 2 / (sigma ** 2).sum():.2f}; mean target coordinates[:4] {np.round(c[:4], 3)}")
    pool = pd.read_parquet(run / "examples.parquet")
    domains = np.array(domain_labels(pool))
    stored = x @ c / norms / np.linalg.norm(c)
    first = x[:, 0] * np.sign(c[0]) / norms
    print(f"Pearson(stored score, first coordinate / |g|) {pearsonr(stored, first)[0]:.3f}")
    k = max(1, round(0.05 * len(pool)))
    problems = [i for i, p in enumerate(pool.prompt) if p.startswith(WORD_PROBLEM_OPENINGS)]
    for name, score in [("stored score", stored), ("first direction alone", first),
                        ("first direction dropped", x[:, 1:] @ c[1:] / norms / np.linalg.norm(c[1:]))]:
        order = np.argsort(-score)
        place = np.empty(len(score), int)
        place[order] = np.arange(1, len(score) + 1)
        shares = {d: round(v, 2) for d, v in domain_shares(domains[order[:k]]).items()}
        print(f"{name:24s} top {k}: {shares}; word problems at {[int(place[i]) for i in problems]}")
    return stored


def loss_relation(run: Path, cfg: dict, stored: np.ndarray, n_rows: int, tok, model) -> None:
    pool, scores = pd.read_parquet(run / "examples.parquet"), pd.read_parquet(run / "scores.parquet")
    print(f"Spearman(score, tokens) {spearmanr(stored, scores['n_tokens']).statistic:.3f}")
    rows = np.random.default_rng(0).choice(len(pool), min(n_rows, len(pool)), replace=False)
    losses = np.array([loss_and_grad(tok, model, pool.prompt[i], pool.response[i], cfg["max_length"], False)[0]
                       for i in rows])
    lo, hi = np.quantile(stored[rows], [0.2, 0.8])
    print(f"Spearman(score, loss) over {len(rows)} rows {spearmanr(stored[rows], losses).statistic:.3f}; mean loss "
          f"bottom fifth {losses[stored[rows] <= lo].mean():.2f}, top fifth {losses[stored[rows] >= hi].mean():.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished GIST run folder with one target subtask")
    p.add_argument("--check-ranks", default="1,2,3", help="pool ranks whose stored score is recomputed naively")
    p.add_argument("--loss-rows", type=int, default=240, help="random pool rows for the loss relation (0: skip)")
    a = p.parse_args()
    cfg = json.loads((a.run / "config.json").read_text())
    torch.set_num_threads(2)
    stored = variants(a.run, cfg)
    tok, model = load_model(a.run, cfg)
    naive_check(a.run, cfg, [int(r) for r in a.check_ranks.split(",")], tok, model)
    if a.loss_rows:
        loss_relation(a.run, cfg, stored, a.loss_rows, tok, model)


if __name__ == "__main__":
    main()
