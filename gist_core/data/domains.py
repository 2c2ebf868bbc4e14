"""A cheap domain label for an instruction row: code, math, writing or other.

A reading aid for pools without labels (ShareGPT): "what kind of rows did a method select?". It is a handful
of regular expressions over the prompt and response text, not a classifier and not ground truth; expect a
few rows in ten of a real pool to be labelled debatably (a maths answer full of `x = 3` lines, an essay about
software). The rule, first match wins:

1. code, strong: a fenced code block (```) anywhere, or a line only code has (`def name(...):`,
   `class Name:`, `#include <...>`, `import x`, `from x import y`, a `>>> ` doctest).
2. math, strong: LaTeX (`$x^2$`, `\\frac`, `\\sqrt`, `\\begin{equation}`; a `$...$` span must hold `\\`,
   `^`, `_` or `=`, so prices are not LaTeX), or an equation: an arithmetic expression followed by `=`
   (`16 - 3 - 4 = 9`, `6Y - 35 = 37`). It comes before the weak code rule because worked answers are
   full of `Total = 4 + 5 = 9` lines that look like assignments.
3. code, weak: at least 3 code-looking lines making up a quarter of the non-blank lines (`return`,
   `function`, `SELECT`, lines ending in `;`, `{`, `}` or `):`, assignments such as `total = f(x)`, HTML
   tags, shell prompts), or a programming cue in the prompt (a language name, "code", "function",
   "script", "regex", ...) with at least two code-looking lines.
4. math, weak: a word-problem cue in the prompt ("calculate", "solve", "probability", "percent", "how
   far", ...) with a number in the prompt, or "how many", "how much", "in total", "altogether" with two.
5. writing: a writing request in the prompt: write/compose/draft/create ... essay, story, poem, email,
   letter, blog post, article, speech, lyrics, tweet, slogan, cover letter, notice, ...; or rewrite,
   rephrase, paraphrase, summarise, proofread, reword, ... .
6. other: everything else (explanations, advice, trivia, chat, role play, other languages' rows that hit
   no rule).

Keywords are matched in English, code keywords case-sensitively (so "If you want" is not the start of an
`if` statement).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

DOMAINS = ("code", "math", "writing", "other")

_FENCE = re.compile(r"```")
_CODE_START = re.compile(  # matched at a line's start
    r"\s*(?:(?:def|class|import|return|elif|except|try:|lambda|async def|await|yield|raise|#include|#define|"
    r"public|private|protected|static|void|function|const|let|var|package|using|fn|impl|struct|func|"
    r"SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|console\.log|System\.out|printf?|std::)\b"
    r"|from\s+[\w.]+\s+import\b"
    r"|(?:if|for|while|with|else)\b.*:\s*$"
    r"|[A-Za-z_][\w.\[\]'\"]*\s*(?:[-+*/]?=|:=)\s*[\w\[\({'\"-].*[\w\)\]}'\"]\s*;?\s*$"
    r"|</?[a-zA-Z][\w-]*(?:\s[^>]*)?>"
    r"|[$>]\s*(?:pip|npm|git|cd|ls|sudo|python|docker|kubectl)\b)")
_CODE_SIGNATURE = re.compile(  # one of these lines is enough: prose does not look like this
    r"^\s*(?:def \w+\(.*\)(?:\s*->.*)?:|class \w+(?:\(.*\))?:|#include\s*[<\"]|import \w+(?:\.\w+)*(?: as \w+)?$|"
    r"from [\w.]+ import \w|>>> )", re.MULTILINE)
_CODE_END = re.compile(r"(?:[;{}]|\):)\s*$")  # searched: statements and blocks end like this, sentences rarely
_CODE_CUE = re.compile(
    r"\b(?:python|javascript|typescript|java|c\+\+|c#|golang|rust|kotlin|swift|php|ruby|sql|html|css|bash|"
    r"shell script|powershell|regex|json|yaml|react|django|flask|node\.?js|pandas|numpy|code|coding|programming|"
    r"function|script|compile|debug|algorithm|dockerfile|kubernetes)\b", re.IGNORECASE)
_LATEX = re.compile(r"\$[^$\n]*[\\^_=][^$\n]*\$|\\(?:frac|sqrt|sum_|int_|cdot|times|begin\{(?:equation|align)|left\()")
_EQUATION = re.compile(  # 16 - 3 - 4 = 9, or algebra such as 6Y - 35 = 37 (no nested ambiguity: linear time)
    r"\d[\d.,]*(?:\s*[-+*/×÷^]\s*\(?\d[\d.,]*\)?)+\s*=\s*[$€£]?-?\d|\b\d*[A-Za-z]\s*[-+*/]\s*\d[\d.,]*\s*=\s*-?\d")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?")
_WEAK_MATH_CUE = re.compile(r"\b(?:how many|how much|in total|altogether)\b", re.IGNORECASE)
_MATH_CUE = re.compile(
    r"\b(?:calculate|compute|solve|equation|probability|percent(?:age)?|derivative|integral|average of|"
    r"sum of|product of|remainder|divisible|prime number|square root|what is \d|how long (?:will|does|did) it take|"
    r"how far|how old|ratio)\b", re.IGNORECASE)
_WRITING = re.compile(
    r"\b(?:write|compose|draft|create|generate|craft|come up with)\b[^.?!\n]{0,80}?"
    r"\b(?:essay|story|stories|poem|poetry|haiku|sonnet|limerick|email|e-mail|letter|blog|article|speech|song|"
    r"lyrics|tweet|post|caption|slogan|tagline|headline|cover letter|bio|biography|newsletter|ad copy|"
    r"script|screenplay|dialogue|monologue|eulogy|toast|review|description|paragraph|outline|press release|"
    r"ad|advertisement|statement|notice|memo|proposal|report|resume|summary)s?\b"
    r"|\b(?:rewrite|re-write|rephrase|paraphrase|summari[sz]e|summary of|tl;?dr|proofread|reword|polish|"
    r"make (?:it|this) (?:more|less|sound)|improve (?:the|this|my) (?:text|writing|essay|paragraph|email))\b",
    re.IGNORECASE)

def domain_label(prompt: str, response: str = "") -> str:
    """'code', 'math', 'writing' or 'other' for one row (see the module docstring for the rule)."""
    prompt, response = prompt or "", response or ""
    text = f"{prompt}\n{response}"
    if _FENCE.search(text) or _CODE_SIGNATURE.search(text):
        return "code"
    if _LATEX.search(text) or _EQUATION.search(text):  # before the weaker code rule: "Total = 4 + 5 = 9" lines
        return "math"
    if _looks_like_code(prompt, text):
        return "code"
    if _has_word_problem_cue(prompt):
        return "math"
    if _WRITING.search(prompt):
        return "writing"
    return "other"


def domain_labels(rows: Any) -> list[str]:
    """One label per row of: a pandas DataFrame or an ExampleTable (prompt and response columns), a sequence
    of Examples (or anything with .prompt and .response), of (prompt, response) pairs, or of prompt strings."""
    if hasattr(rows, "column") and hasattr(rows, "table"):  # ExampleTable: read the two columns, build no Examples
        return [domain_label(p, r) for p, r in zip(rows.column("prompt"), rows.column("response"))]
    if hasattr(rows, "columns") and "prompt" in rows.columns:  # a DataFrame
        responses = rows["response"] if "response" in rows.columns else [""] * len(rows)
        return [domain_label(p, r) for p, r in zip(rows["prompt"], responses)]
    return [domain_label(*_pair(row)) for row in rows]


def domain_shares(labels: Iterable[str]) -> dict[str, float]:
    """Fraction of rows per domain, in DOMAINS order (all four keys, zeros included)."""
    labels = list(labels)
    n = max(len(labels), 1)
    return {d: sum(1 for x in labels if x == d) / n for d in DOMAINS}


def _pair(row: Any) -> tuple[str, str]:
    if isinstance(row, str):
        return row, ""
    if isinstance(row, dict):
        return row.get("prompt") or "", row.get("response") or ""
    if hasattr(row, "prompt"):
        return row.prompt, getattr(row, "response", "")
    prompt, response = row
    return prompt, response


def _looks_like_code(prompt: str, text: str) -> bool:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    code_lines = sum(1 for ln in lines if _CODE_START.match(ln) or _CODE_END.search(ln))
    if code_lines >= 3 and code_lines >= 0.25 * len(lines):
        return True
    return code_lines >= 2 and bool(_CODE_CUE.search(prompt))


def _has_word_problem_cue(prompt: str) -> bool:
    numbers = len(_NUMBER.findall(prompt))
    return (numbers >= 1 and bool(_MATH_CUE.search(prompt))) or (numbers >= 2 and bool(_WEAK_MATH_CUE.search(prompt)))
