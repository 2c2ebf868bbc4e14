"""gist_core.data.domains on hand-written rows: each rule fires where it should and stays quiet where it should not."""
from __future__ import annotations

import pandas as pd
import pytest

from gist_core.data.domains import DOMAINS, domain_label, domain_labels, domain_shares
from gist_core.data.examples import Example, ExampleTable

CASES = [
    # code
    ("Fix my script", "Here you go:\n```python\nprint('hi')\n```", "code"),
    ('def add(a, b):\n    """Return a + b."""\n', "    return a + b\n", "code"),  # HumanEval-shaped, no fence
    ("What does this do?", "#include <stdio.h>\nint main() {\n  printf(\"hi\");\n  return 0;\n}", "code"),
    ("Write a SQL query for the top customers", "SELECT name, total\nFROM orders\nORDER BY total DESC;", "code"),
    ("How do I install it in python?", "Run this:\n$ pip install requests\nthen:\nimport requests", "code"),
    # math
    ("Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4. How much does she make at $2 an egg?",
     "She sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\n#### 18", "math"),
    ("Solve for x: 2x + 3 = 11", "Subtract 3, then divide by 2: x is 4.", "math"),
    ("What is the derivative of x^2?", "It is $\\frac{d}{dx} x^2 = 2x$.", "math"),
    ("A train travels 120 km in 2 hours. How far does it go in 5 hours?", "It goes 300 km.", "math"),
    ("How many letters were delivered?",  # assignment-like lines of a worked answer are not code
     "Monday = 425 letters\nTuesday = 1/5 * 425 + 17 = 102 letters\nTotal = 425 + 102 = 527 letters", "math"),
    ("The ropes total 37 cm. How long is the red one?", "Y + Y - 7 + 4 (Y - 7) = 37\n6Y - 35 = 37\nY = 12", "math"),
    # writing
    ("Write a short poem about the sea", "Waves fold over waves,\nthe salt remembers.", "writing"),
    ("Can you draft an email to my landlord about the broken heater?", "Dear Mr. Smith, ...", "writing"),
    ("Please summarize the following article: The city council met on Tuesday.", "The council met.", "writing"),
    ("rewrite this to sound more professional: hey guys, meeting moved", "Dear all, the meeting has moved.", "writing"),
    ("Compose a cover letter for a nursing job", "Dear Hiring Manager, I am writing to apply ...", "writing"),
    # other
    ("What is the capital of France?", "Paris.", "other"),
    ("Explain how vaccines work", "If you are exposed, your immune system remembers. For example, ...", "other"),
    ("Give me 5 tips for better sleep in 2024", "1. Keep a schedule.\n2. Avoid screens.", "other"),
    ("Tell me about the 2019-2020 season", "It ran from 2019 to 2020; prices were $5 and $10.", "other"),
]


@pytest.mark.parametrize("prompt,response,label", CASES, ids=[f"{c[2]}-{k}" for k, c in enumerate(CASES)])
def test_hand_written_rows_get_their_domain(prompt, response, label):
    assert domain_label(prompt, response) == label


def test_code_beats_math_and_writing_when_both_cues_are_there():
    assert domain_label("Write a story generator in python", "```python\nimport random\n```") == "code"
    assert domain_label("Calculate 3 + 4 = ?", "```\n3 + 4 = 7\n```") == "code"


def test_plain_english_starting_like_code_keywords_is_not_code():
    text = "If you want to go, let me know.\nFor example: bring water.\nReturn the keys by Friday."
    assert domain_label("Plan my trip", text) == "other"


def test_the_vectorised_helper_reads_frames_tables_examples_pairs_and_strings():
    prompts, responses = [c[0] for c in CASES], [c[1] for c in CASES]
    expected = [c[2] for c in CASES]
    frame = pd.DataFrame({"prompt": prompts, "response": responses})
    examples = [Example(id=str(k), prompt=p, response=r) for k, (p, r) in enumerate(zip(prompts, responses))]
    assert domain_labels(frame) == expected
    assert domain_labels(ExampleTable.from_examples(examples)) == expected
    assert domain_labels(examples) == expected
    assert domain_labels(list(zip(prompts, responses))) == expected
    assert domain_labels([{"prompt": p, "response": r} for p, r in zip(prompts, responses)]) == expected
    assert domain_labels(["Write a haiku about rain"]) == ["writing"]


def test_shares_cover_every_domain_and_sum_to_one():
    shares = domain_shares(["code", "code", "math", "other"])
    assert list(shares) == list(DOMAINS) and shares == {"code": 0.5, "math": 0.25, "writing": 0.0, "other": 0.25}
    assert domain_shares([]) == dict.fromkeys(DOMAINS, 0.0)


def test_empty_and_missing_text_is_other():
    assert domain_label("", "") == domain_label(None, None) == "other"  # type: ignore[arg-type]
