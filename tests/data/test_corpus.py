"""The synthetic corpus: deterministic, honest base rates, disjoint splits, ground truth that checks out."""
from __future__ import annotations

import random
import re
from collections import Counter

from gist_core.data.corpus import (
    SKILLS,
    TARGET_TASKS,
    CorpusConfig,
    _distractor_answer,
    _wrong_answer,
    build_pool,
    build_targets,
    pretraining_text,
    write_sample_data,
)


def _build(seed=0, n=6000):
    cfg = CorpusConfig(n_pool=n, seed=seed)
    targets, reserved = build_targets(cfg)
    return cfg, targets, build_pool(cfg, reserved)


def test_deterministic_by_seed():
    assert _build(0, 500)[2] == _build(0, 500)[2]
    assert _build(0, 500)[2] != _build(1, 500)[2]


def test_shape_of_the_corpus():
    cfg, targets, pool = _build()
    assert len(SKILLS) >= 10 and all(len(s.templates) >= 3 for s in SKILLS.values())
    assert len(TARGET_TASKS) >= 3
    kinds = Counter(r["kind"] for r in pool)
    assert 0.07 < kinds["wrong"] / len(pool) < 0.13 and 0.04 < kinds["distractor"] / len(pool) < 0.08
    for task, subs in TARGET_TASKS.items():
        assert len(subs) >= 2
        assert 3 <= len(targets[task]["val"]) // len(subs) <= 5
        rate = sum(r["skill"] in subs and r["kind"] == "correct" for r in pool) / len(pool)
        assert 0.05 < rate <= 0.12, (task, rate)


def test_splits_disjoint_and_answers_correct():
    cfg, targets, pool = _build()
    pool_prompts = {r["prompt"] for r in pool}
    seen = set()
    for task in targets.values():
        for rows in task.values():
            for r in rows:
                assert r["prompt"] not in pool_prompts and r["prompt"] not in seen
                seen.add(r["prompt"])
                assert r["kind"] == "correct"


def test_wrong_and_distractor_answers_differ_from_the_right_one():
    rng = random.Random(0)
    for skill in SKILLS.values():
        for _ in range(30):
            args = skill.sample(rng)
            right = skill.answer(args)
            assert _wrong_answer(skill, args, rng) != right, skill.name
            assert _distractor_answer(skill, args, rng) != right, skill.name


def test_no_token_marks_the_targets_relevant_examples():
    """Every word of a target's correct prompts also occurs in prompts that are not relevant to it."""
    cfg, targets, pool = _build()
    for task, subs in TARGET_TASKS.items():
        rel, other = Counter(), Counter()
        for r in pool:
            words = set(re.findall(r"[a-z]+", r["prompt"]))
            (rel if r["skill"] in subs and r["kind"] == "correct" else other).update(words)
        only_relevant = [w for w in rel if other[w] == 0]
        assert only_relevant == [], (task, only_relevant)


def test_pretraining_text_is_not_instruction_format():
    lines = pretraining_text(2000)
    assert not any("###" in line or "Instruction" in line for line in lines)
    # copy-from-context: most lines refer back to a word of a list they contain
    assert sum(len(set(line.split())) < len(line.split()) for line in lines) > 0.5 * len(lines)


def test_write_sample_data(tmp_path):
    summary = write_sample_data(tmp_path, CorpusConfig(n_pool=400))
    assert (tmp_path / "pool.jsonl").exists() and (tmp_path / "targets/facts/test.jsonl").exists()
    assert summary["n_pool"] == 400
