"""Downstream evaluation (gist_core/model/evaluate.py) against the plain loop in tests/naive_eval.py, which shares
none of its code (its docstring states the conventions it follows)."""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch
from conftest import randomise_lora_b
from naive_eval import TEMPLATE, TOL, naive_greedy, naive_ids, naive_test_loss


@pytest.fixture(scope="module")
def perturbed(micro_model_dir):
    """The micro model + a rank-4 LoRA whose B is random (nonzero), so the adapter changes every output."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from gist_core.config import LoraSettings
    from gist_core.model.load import attach_lora
    tok = AutoTokenizer.from_pretrained(micro_model_dir)
    base = AutoModelForCausalLM.from_pretrained(micro_model_dir, dtype=torch.float32)
    model = randomise_lora_b(attach_lora(base, LoraSettings(r=4), seed=0), seed=5, scale=0.3)
    return model.eval(), tok


def uneven_examples(micro_corpus):
    """The micro test split cut to 4/3/2/1 examples per subtask, responses of 1 to 4 words (several tokens
    each): per-subtask, per-example and per-token means then all differ."""
    from gist_core.data.examples import load_examples
    tests = load_examples(micro_corpus["test"])
    subs = list(dict.fromkeys(ex.subtask for ex in tests))
    out = []
    for k, sub in enumerate(subs):
        rows = [ex for ex in tests if ex.subtask == sub][: len(subs) - k]
        for j, ex in enumerate(rows):
            words = [ex.response, "then", "zebra", "quokkas"][: 1 + (j + k) % 4]
            out.append(type(ex)(id=ex.id, prompt=ex.prompt, response=" ".join(words), subtask=sub))
    return out


def test_test_loss_equals_a_plain_loop_and_the_loop_catches_mutations(perturbed, micro_corpus):
    from gist_core.model.evaluate import evaluate_on_target
    model, tok = perturbed
    exs = uneven_examples(micro_corpus)
    assert sorted(np.unique([ex.subtask for ex in exs], return_counts=True)[1].tolist()) == [1, 2, 3, 4]
    assert len({len(naive_ids(tok, ex)[0]) - naive_ids(tok, ex)[1] for ex in exs}) > 2  # response lengths vary
    got = evaluate_on_target(model, tok, exs, n_em=1)
    want, per = naive_test_loss(model, tok, exs)
    assert got["test_loss"] == pytest.approx(want, abs=TOL)
    assert set(got["per_subtask"]) == set(per)
    for s, v in per.items():
        assert got["per_subtask"][s]["loss"] == pytest.approx(v, abs=TOL), s

    # the adapter is live: without it the loss is another number
    with model.disable_adapter():
        assert abs(naive_test_loss(model, tok, exs)[0] - want) > 100 * TOL
    # each plausible mistake in the convention moves the number far beyond the tolerance
    mutations = {"EOS included": naive_test_loss(model, tok, exs, include_eos=True)[0],
                 "mean over examples": naive_test_loss(model, tok, exs, pooling="examples")[0],
                 "mean over tokens": naive_test_loss(model, tok, exs, pooling="tokens")[0]}
    for name, value in mutations.items():
        assert abs(value - got["test_loss"]) > 100 * TOL, name


def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(perturbed, micro_corpus):
    from gist_core.data.examples import load_examples
    from gist_core.model.evaluate import evaluate_on_target, greedy_answers
    model, tok = perturbed
    exs = load_examples(micro_corpus["test"])[::2]  # 10 prompts, all subtasks, in one batch
    lengths = [len(tok(TEMPLATE.format(prompt=ex.prompt), add_special_tokens=False)["input_ids"]) for ex in exs]
    assert len(set(lengths)) >= 4, lengths  # real left padding in the batch
    want = [naive_greedy(model, tok, ex) for ex in exs]
    assert len({a for a in want if a}) >= 3, want  # answers that can differ, not one empty string
    assert greedy_answers(model, tok, exs) == want
    assert greedy_answers(model, tok, exs, batch_size=3) == want

    # the mutation the left padding guards against: right padding continues from a pad token
    T = max(lengths)
    ids = torch.full((len(exs), T), tok.pad_token_id, dtype=torch.long)
    att = torch.zeros_like(ids)
    for i, ex in enumerate(exs):
        p = tok(TEMPLATE.format(prompt=ex.prompt), add_special_tokens=False)["input_ids"]
        ids[i, : len(p)], att[i, : len(p)] = torch.tensor(p), 1
    with torch.no_grad():
        gen = model.generate(input_ids=ids, attention_mask=att, max_new_tokens=16, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    assert [tok.decode(g[T:], skip_special_tokens=True).strip() for g in gen] != want

    # exact match from those answers: half the references set to the model's own answer
    gold = [type(ex)(id=ex.id, prompt=ex.prompt, response=a if i % 2 == 0 else ex.response, subtask=ex.subtask)
            for i, (ex, a) in enumerate(zip(exs, want))]
    got = evaluate_on_target(model, tok, gold)
    by_sub: dict = defaultdict(list)
    for ex, a in zip(gold, want):
        by_sub[ex.subtask].append(float(a == ex.response.strip()))
    assert {s: v["exact_match"] for s, v in got["per_subtask"].items()} == {s: np.mean(v) for s, v in by_sub.items()}
    assert got["exact_match"] == pytest.approx(np.mean([np.mean(v) for v in by_sub.values()]), abs=1e-12)
    assert 0 < got["exact_match"] < 1


@pytest.mark.parametrize("pred, gold, match", [
    ("She makes 9 * 2 = $18 every day.", "Janet sells 9 duck eggs.\n#### 18", True),
    ("The answer is 1,234.50 dollars", "#### 1234.5", True),
    ("18 eggs, then 20", "#### 18", False),      # the *last* number the model writes counts
    ("no number at all", "#### 7", False),
    ("-3", "#### -3", True),
    ("Paris", "Paris", True),                    # no '#### N' line: the whole stripped text
    (" Paris ", "Paris\n", True),
    ("Paris, France", "Paris", False),
])
def test_exact_match_compares_final_numbers_for_gsm8k_style_answers(pred, gold, match):
    from gist_core.model.evaluate import answer_matches
    assert answer_matches(pred, gold) is match
