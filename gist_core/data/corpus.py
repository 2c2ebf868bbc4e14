"""Synthetic multi-skill instruction corpus: the bundled default's pool, targets and pretraining text.

Deterministic by seed. Every example carries ground truth (skill, subtask, kind) so selection
quality can be measured exactly. Design choices (see reference/prototype.md):
- skills a tiny LM can learn: copy and position operations, fixed small maps, short answers;
- templates share vocabulary across skills ("word", "list", "after", "letter", "first", ...)
  so no target skill is findable by a surface token that only it carries;
- 10% wrong answers (right format, wrong content) and 6% look-alike distractors (the skill's
  phrasing, another operation's answer on the same inputs);
- target skills are rare in the pool (base rate ~10% per target task);
- the pretraining text shows the same *operations* in plain prose, never the instruction
  format, and is dense in copy-from-context patterns so induction heads can form.

Run as a script to (re)write `sample_data/`:  python -m gist_core.data.corpus --out sample_data
"""
from __future__ import annotations

import argparse
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gist_core.store.atomic import atomic_write_text

CATEGORIES = {
    "animal": "cat dog fox owl cow pig hen bee ant bat yak eel".split(),
    "color": "red blue green pink gray gold black white brown tan teal plum".split(),
    "food": "bread rice cake soup milk egg corn bean pie jam tea nut".split(),
    "tool": "saw axe drill rake hammer shovel wrench knife hoe file pliers ruler".split(),
}
CATEGORY_OF = {w: c for c, ws in CATEGORIES.items() for w in ws}
# List items: common short words that are not category words, so category answers stay a clean map.
ITEMS = (
    "sun moon star hat box cup pen map key door lamp ship tree rock sand leaf ring bell "
    "coat shoe road hill lake rain snow wind fire book song game desk card kite boat drum "
    "nest rope coin seed wall gate flag cloud"
).split()
NAMES = "ann bob cal dan eve fay gus hal ivy jon kim lou max ned oli pam".split()
LETTERS = "abcdefghijklmnopqrstuvwxyz"
ORDINALS = ["first", "second", "third", "fourth", "fifth"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]
PREFIXES = ["", "please ", "now ", "ok, ", "quick: ", "hey, ", "tell me: ", "task: "]


@dataclass(frozen=True)
class Skill:
    name: str
    templates: tuple[str, ...]
    sample: Callable[[random.Random], dict]  # random inputs for the templates
    answer: Callable[[dict], str]            # the correct answer for those inputs
    family: str                              # 'list' | 'word' | 'letter': which ops a distractor borrows


def _items(rng: random.Random, lo: int = 3, hi: int = 5) -> list[str]:
    return rng.sample(ITEMS, rng.randint(lo, hi))


def _list_args(rng: random.Random) -> dict:
    items = _items(rng, 4, 5)
    k = rng.randint(1, min(4, len(items) - 1))
    return {"items": items, "list": " ".join(items), "k": k, "ord": ORDINALS[k - 1],
            "w": items[k - 1], "n": rng.randint(2, 4)}


def _word_args(rng: random.Random) -> dict:
    w = rng.choice(list(CATEGORY_OF))
    return {"w": w, "n": rng.randint(2, 4), "items": [w], "list": w}


def _letter_args(rng: random.Random) -> dict:
    i = rng.randint(1, 24)
    return {"c": LETTERS[i], "items": [LETTERS[i]], "list": LETTERS[i]}


def _key_args(rng: random.Random) -> dict:
    names = rng.sample(NAMES, 3)
    vals = rng.sample(ITEMS, 3)
    j = rng.randint(0, 2)
    pairs = ", ".join(f"{a} has {b}" for a, b in zip(names, vals))
    return {"pairs": pairs, "q": names[j], "ans": vals[j], "items": vals, "list": " ".join(vals)}


def _contains_args(rng: random.Random) -> dict:
    a = _list_args(rng)
    inside = rng.random() < 0.5
    a["w"] = rng.choice(a["items"]) if inside else rng.choice([x for x in ITEMS if x not in a["items"]])
    return a


def _repeat_args(rng: random.Random) -> dict:
    w = rng.choice(ITEMS)
    n = rng.randint(2, 4)
    return {"w": w, "n": n, "num": NUMBERS[n], "items": [w], "list": w}


def _before_args(rng: random.Random) -> dict:
    a = _list_args(rng)
    return {**a, "w": a["items"][a["k"]]}  # the word at position k+1; its predecessor is item k


def _count_args(rng: random.Random) -> dict:
    items = _items(rng, 2, 6)
    return {"items": items, "list": " ".join(items)}


def _item_word_args(rng: random.Random) -> dict:
    w = rng.choice(ITEMS + list(CATEGORY_OF))  # category words too: no word is unique to a target skill
    return {"w": w, "items": [w], "list": w}


def _plural(w: str) -> str:
    return w + ("es" if w.endswith(("x", "s", "sh", "ch")) else "s")


S = Skill
SKILLS: dict[str, Skill] = {s.name: s for s in [
    # --- target task "lookup": find an element of the context by position, neighbour or key
    S("kth_word", ("what is the {ord} word in the list: {list}", "give the {ord} word of this list: {list}",
                   "in the list {list}, which word is number {k}?", "list: {list}. return word number {k}"),
      _list_args, lambda a: a["items"][a["k"] - 1], "list"),
    S("word_after", ("in the list {list}, which word comes after {w}?", "list: {list}. give the word after {w}",
                     "which word follows {w} in this list: {list}", "after {w} in the list {list} comes which word?"),
      _list_args, lambda a: a["items"][a["k"]], "list"),
    S("key_lookup", ("{pairs}. what does {q} have?", "given {pairs}, which word does {q} have?",
                     "{pairs}. tell me the word that {q} has", "in the list {pairs}, what is with {q}?"),
      _key_args, lambda a: a["ans"], "list"),
    S("last_word", ("what is the last word in the list: {list}", "give the last word of this list: {list}",
                    "in the list {list}, which word comes last?", "list: {list}. return the final word"),
      _list_args, lambda a: a["items"][-1], "list"),
    # --- target task "transform": rewrite a list or word
    S("reverse_list", ("write the list in reverse order: {list}", "reverse this list: {list}",
                       "give the words {list} backwards", "list: {list}. return the list reversed"),
      _list_args, lambda a: " ".join(reversed(a["items"])), "list"),
    S("swap_ends", ("swap the first and last word in the list: {list}", "in the list {list}, exchange the first and last word",
                    "list: {list}. swap the two end words", "give the list {list} with first and last word swapped"),
      _list_args, lambda a: " ".join([a["items"][-1], *a["items"][1:-1], a["items"][0]]), "list"),
    S("repeat_word", ("repeat the word {w} {num} times", "write the word {w} {n} times",
                      "say {w} {num} times in a list", "give a list of {n} copies of the word {w}"),
      _repeat_args, lambda a: " ".join([a["w"]] * a["n"]), "word"),
    S("copy_list", ("copy the list: {list}", "write this list again: {list}",
                    "repeat the words {list} in order", "list: {list}. return the same list"),
      _list_args, lambda a: " ".join(a["items"]), "list"),
    # --- target task "facts": small fixed maps and membership
    S("category", ("what kind of thing is the word {w}?", "is the word {w} an animal, a color, a food or a tool?",
                   "give the group of the word {w}", "word: {w}. which kind is it?"),
      _word_args, lambda a: CATEGORY_OF[a["w"]], "word"),
    S("next_letter", ("which letter comes after {c}?", "give the letter after {c} in the alphabet",
                      "what is the next letter after {c}?", "letter: {c}. return the letter that follows"),
      _letter_args, lambda a: LETTERS[LETTERS.index(a["c"]) + 1], "letter"),
    S("contains", ("is the word {w} in the list: {list}?", "list: {list}. does it have the word {w}?",
                   "does the list {list} contain {w}?", "check if {w} is in this list: {list}"),
      _contains_args, lambda a: "yes" if a["w"] in a["items"] else "no", "list"),
    S("plural", ("what is the plural of the word {w}?", "give the word {w} in plural",
                 "write the plural form of {w}", "word: {w}. return its plural"),
      _word_args, lambda a: _plural(a["w"]), "word"),
    # --- other skills (never a target): the pool's majority, sharing the targets' vocabulary
    S("word_before", ("in the list {list}, which word comes before {w}?", "list: {list}. give the word before {w}",
                      "which word is just before {w} in this list: {list}", "before {w} in the list {list} comes which word?"),
      _before_args, lambda a: a["items"][a["k"] - 1], "list"),
    S("first_word", ("what is the first word in the list: {list}", "give the opening word of this list: {list}",
                     "in the list {list}, which word comes first?", "list: {list}. return the initial word"),
      _list_args, lambda a: a["items"][0], "list"),
    S("count_words", ("how many words are in the list: {list}", "count the words in this list: {list}",
                      "give the number of words in {list}", "list: {list}. how many words?"),
      _count_args, lambda a: NUMBERS[len(a["items"])], "list"),
    S("prev_letter", ("which letter comes before {c}?", "give the letter before {c} in the alphabet",
                      "what is the letter just before {c}?", "going backwards in the alphabet, which letter is before {c}?"),
      _letter_args, lambda a: LETTERS[LETTERS.index(a["c"]) - 1], "letter"),
    S("drop_first", ("remove the first word from the list: {list}", "list: {list}. drop the opening word",
                     "give the list {list} without its first word", "delete the first word of this list: {list}"),
      _list_args, lambda a: " ".join(a["items"][1:]), "list"),
    S("join_words", ("join the words of the list with dashes: {list}", "list: {list}. connect the words with a dash",
                     "write {list} as one word joined by dashes", "link the words {list} with dashes"),
      _list_args, lambda a: "-".join(a["items"]), "list"),
    S("uppercase_word", ("write the word {w} in capital letters", "give the word {w} in upper case",
                         "what is {w} in capitals?", "word: {w}. return it in capital letters"),
      _item_word_args, lambda a: a["w"].upper(), "word"),
]}

# Operations a look-alike distractor borrows: another skill's answer on the same inputs.
DISTRACTOR_OPS: dict[str, list[Callable[[dict], str]]] = {
    "list": [lambda a: a["items"][0], lambda a: a["items"][-1], lambda a: " ".join(reversed(a["items"])),
             lambda a: " ".join(a["items"]), lambda a: NUMBERS[min(len(a["items"]), 7)],
             lambda a: "-".join(a["items"]), lambda a: " ".join(a["items"][1:])],
    "word": [lambda a: _plural(a["w"]), lambda a: a["w"], lambda a: a["w"].upper(),
             lambda a: CATEGORY_OF.get(a["w"], "thing"), lambda a: " ".join([a["w"]] * 2)],
    "letter": [lambda a: LETTERS[LETTERS.index(a["c"]) + 1], lambda a: LETTERS[LETTERS.index(a["c"]) - 1],
               lambda a: a["c"], lambda a: a["c"] * 2, lambda a: a["c"].upper()],
}

TARGET_TASKS: dict[str, list[str]] = {
    "lookup": ["kth_word", "word_after", "key_lookup", "last_word"],
    "transform": ["reverse_list", "swap_ends", "repeat_word", "copy_list"],
    "facts": ["category", "next_letter", "contains", "plural"],
}
# The target `gist-lab demo` and the dashboard use unless told otherwise (see pipeline.demo_config).
DEFAULT_DEMO_TARGET = "transform"
# The bundled default's folder: GIST_LAB_SAMPLE_DATA when set (CLI, pages and tests alike), else the repository's.
SAMPLE_DATA = Path(os.environ.get("GIST_LAB_SAMPLE_DATA", Path(__file__).resolve().parents[2] / "sample_data"))
TARGET_SKILLS = {s for subs in TARGET_TASKS.values() for s in subs}
TASK_OF_SKILL = {s: t for t, subs in TARGET_TASKS.items() for s in subs}


@dataclass(frozen=True)
class CorpusConfig:
    """How the bundled corpus is generated (all fields deterministic by `seed`)."""
    n_pool: int = 12_000          # pool size; scales to 300,000
    target_skill_weight: float = 0.03  # share of the pool per target skill (-> ~10% base rate per task)
    p_wrong: float = 0.10         # right format, wrong content
    p_distractor: float = 0.06    # the skill's phrasing, another operation's answer
    n_val_per_subtask: int = 5
    n_test_per_subtask: int = 100
    seed: int = 0

    def __post_init__(self):
        if self.n_pool < 100:
            raise ValueError(f"n_pool must be >= 100, got {self.n_pool}")
        if not 0 < self.target_skill_weight * len(TARGET_SKILLS) < 1:
            raise ValueError("target_skill_weight * number of target skills must lie in (0, 1)")
        if self.p_wrong + self.p_distractor >= 1:
            raise ValueError("p_wrong + p_distractor must be < 1")
        if not 1 <= self.n_val_per_subtask <= 50:
            raise ValueError("n_val_per_subtask must lie in [1, 50]")


def render_prompt(skill: Skill, args: dict, rng: random.Random) -> str:
    return rng.choice(PREFIXES) + rng.choice(skill.templates).format(**args)


def _wrong_answer(skill: Skill, args: dict, rng: random.Random) -> str:
    """Same skill, same format, other content: the answer for other inputs of this skill."""
    right = skill.answer(args)
    for _ in range(50):
        other = skill.answer(skill.sample(rng))
        if other != right:
            return other
    return right + " " + right  # unreachable in practice; keeps the row wrong


def _distractor_answer(skill: Skill, args: dict, rng: random.Random) -> str:
    right = skill.answer(args)
    options = [ans for op in DISTRACTOR_OPS[skill.family] if (ans := op(args)) != right]
    return rng.choice(options)


def make_example(skill: Skill, kind: str, rng: random.Random, reserved: set[str]) -> dict:
    """One row with ground truth; prompts in `reserved` (val/test) are never reused."""
    for _ in range(200):
        args = skill.sample(rng)
        prompt = render_prompt(skill, args, rng)
        if prompt not in reserved:
            break
    response = {"correct": skill.answer, "wrong": lambda a: _wrong_answer(skill, a, rng),
                "distractor": lambda a: _distractor_answer(skill, a, rng)}[kind](args)
    return {"prompt": prompt, "response": response, "skill": skill.name, "kind": kind}


def _weights(cfg: CorpusConfig) -> dict[str, float]:
    others = [s for s in SKILLS if s not in TARGET_SKILLS]
    rest = (1 - cfg.target_skill_weight * len(TARGET_SKILLS)) / len(others)
    return {s: (cfg.target_skill_weight if s in TARGET_SKILLS else rest) for s in SKILLS}


def _unique_correct(skill: Skill, n: int, rng: random.Random, taken: set[str]) -> list[dict]:
    rows = []
    for _ in range(n * 200):
        if len(rows) == n:
            break
        args = skill.sample(rng)
        prompt = render_prompt(skill, args, rng)
        if prompt in taken:
            continue
        taken.add(prompt)
        rows.append({"prompt": prompt, "response": skill.answer(args), "skill": skill.name, "kind": "correct"})
    if len(rows) < n:
        raise RuntimeError(f"skill {skill.name}: only {len(rows)} distinct prompts for {n} requested")
    return rows


def build_targets(cfg: CorpusConfig) -> tuple[dict[str, dict[str, list[dict]]], set[str]]:
    """task -> {'val': rows, 'test': rows}; val and test prompts are distinct and reserved."""
    rng = random.Random(f"targets-{cfg.seed}")
    taken: set[str] = set()
    out: dict[str, dict[str, list[dict]]] = {}
    for task, subtasks in TARGET_TASKS.items():
        out[task] = {"val": [], "test": []}
        for sub in subtasks:
            rows = _unique_correct(SKILLS[sub], cfg.n_val_per_subtask + cfg.n_test_per_subtask, rng, taken)
            for split, part in (("val", rows[:cfg.n_val_per_subtask]), ("test", rows[cfg.n_val_per_subtask:])):
                for i, r in enumerate(part):
                    out[task][split].append({"id": f"{task}-{split}-{sub}-{i}", **r, "subtask": sub,
                                             "source": f"target-{task}"})
    return out, taken


def build_pool(cfg: CorpusConfig, reserved: set[str]) -> list[dict]:
    rng = random.Random(f"pool-{cfg.seed}")
    weights = _weights(cfg)
    names = list(weights)
    skills = rng.choices(names, weights=[weights[n] for n in names], k=cfg.n_pool)
    rows = []
    for i, name in enumerate(skills):
        u = rng.random()
        kind = "wrong" if u < cfg.p_wrong else "distractor" if u < cfg.p_wrong + cfg.p_distractor else "correct"
        row = make_example(SKILLS[name], kind, rng, reserved)
        rows.append({"id": f"pool-{i:06d}", **row, "subtask": name if name in TARGET_SKILLS else None,
                     "source": "synthetic-" + SKILLS[name].family})
    return rows


# ---------------------------------------------------------------- pretraining text
def _pretrain_line(rng: random.Random) -> str:
    """One line of plain prose exercising an operation, never in the instruction format.

    Most lines show a list and then refer back to one of its elements (copy from context),
    the pattern that makes induction heads form in a small transformer.
    """
    items = _items(rng, 3, 6)
    lst = " ".join(items)
    k = rng.randrange(len(items))
    w = rng.choice(list(CATEGORY_OF))
    c = rng.randint(1, 24)
    names = rng.sample(NAMES, 3)
    vals = rng.sample(ITEMS, 3)
    j = rng.randrange(3)
    choices = [
        lambda: f"the list {lst} has {items[k]} as its {ORDINALS[k] if k < 5 else 'sixth'} word.",
        lambda: f"{lst}. word {k + 1} there is {items[k]}.",
        lambda: f"{lst} - after {items[k]} we find {items[k + 1]}." if k + 1 < len(items) else f"{lst} ends with {items[-1]}.",
        lambda: f"{lst} - before {items[k]} we find {items[k - 1]}." if k > 0 else f"{lst} starts with {items[0]}.",
        lambda: f"{', '.join(f'{a} has {b}' for a, b in zip(names, vals))}. so {names[j]} has {vals[j]}.",
        lambda: f"{lst} backwards reads {' '.join(reversed(items))}.",
        lambda: f"{lst} and once more {lst}.",
        lambda: f"{lst} with the ends swapped is {' '.join([items[-1], *items[1:-1], items[0]])}.",
        lambda: f"{lst} counted makes {NUMBERS[len(items)] if len(items) < 8 else 'many'} words.",
        lambda: f"{lst} without the first is {' '.join(items[1:])}.",
        lambda: f"{lst} joined is {'-'.join(items)}.",
        lambda: f"{items[k]} said {NUMBERS[j + 2]} times is {' '.join([items[k]] * (j + 2))}.",
        lambda: f"a {w} is a kind of {CATEGORY_OF[w]}.",
        lambda: f"the {CATEGORY_OF[w]} {w} and more than one {w} are {_plural(w)}.",
        lambda: f"in the alphabet {LETTERS[c]} is followed by {LETTERS[c + 1]} and preceded by {LETTERS[c - 1]}.",
        lambda: " ".join(LETTERS[c - 1:c + 5]) + ".",
        lambda: f"{items[k]} in capitals is {items[k].upper()}.",
        lambda: f"{lst}: {items[k]} is there, yes. {rng.choice([x for x in ITEMS if x not in items])} is not, no.",
        lambda: f"first {items[0]}, last {items[-1]}, all of {lst}.",
    ]
    # A share of plain repetitions keeps the copy circuit in use after the warm-up phase.
    # A leading space keeps every word the same token wherever it stands.
    if rng.random() < 0.3:
        return repetition_line(rng)
    return " " + rng.choice(choices)()


def repetition_line(rng: random.Random) -> str:
    """A random word sequence, then the same again: the plainest induction-head signal.

    Measured here: a 4-layer model pretrained 12 minutes on the operation prose alone never
    learned to copy (repeat accuracy ~0); a first phase of pure repetitions makes copying appear.
    """
    seq = " ".join(rng.choices(ITEMS + NAMES, k=rng.randint(5, 10)))
    return f" {seq} | {seq}."


def pretraining_text(n_lines: int, seed: int = 0) -> list[str]:
    rng = random.Random(f"pretrain-{seed}")
    return [_pretrain_line(rng) for _ in range(n_lines)]


# ---------------------------------------------------------------- files
def _write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps({k: v for k, v in r.items() if v is not None}) + "\n" for r in rows))


def write_sample_data(out: Path, cfg: CorpusConfig) -> dict:
    """Write pool.jsonl and targets/<task>/{val,test}.jsonl under `out`; return a summary."""
    targets, reserved = build_targets(cfg)
    pool = build_pool(cfg, reserved)
    _write_jsonl(out / "pool.jsonl", pool)
    for task, splits in targets.items():
        for split, rows in splits.items():
            _write_jsonl(out / "targets" / task / f"{split}.jsonl", rows)
    summary = {"config": cfg.__dict__, "n_pool": len(pool), "base_rate": {}}
    for task, subs in TARGET_TASKS.items():
        relevant = sum(r["skill"] in subs and r["kind"] == "correct" for r in pool)
        summary["base_rate"][task] = relevant / len(pool)
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Write the synthetic multi-skill corpus (pool + targets).")
    p.add_argument("--out", default="sample_data", type=Path)
    p.add_argument("--n-pool", type=int, default=CorpusConfig.n_pool)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(write_sample_data(a.out, CorpusConfig(n_pool=a.n_pool, seed=a.seed)), indent=2))


if __name__ == "__main__":
    main()
