"""A pool row as chat turns: the `{"messages": [{"role": ..., "content": ...}, ...]}` record that common
fine-tuning scripts read (TRL's SFTTrainer, axolotl's chat_template, ...).

The turns are those the pool row holds, read with the same rules as the pool (gist_core.data.examples):
- a chat row (`messages` or ShareGPT's `conversations`) keeps every turn, system and earlier assistant turns
  included, roles mapped to system / user / assistant / tool (ShareGPT's human -> user, gpt -> assistant);
- a prompt/response, question/answer or instruction/output(+input) row becomes one user turn (the prompt as
  the pool reads it: instruction + blank line + input) and one assistant turn (the response).
"""
from __future__ import annotations

from collections.abc import Mapping

from gist_core.data.examples import Example, _parse_row


def example_turns(ex: Example) -> list[dict[str, str]]:
    """The example's conversation: its earlier turns (or the prompt as one user turn), then the response."""
    before = list(ex.messages) if ex.messages else [("user", ex.prompt)]
    return [{"role": r, "content": c} for r, c in before] + [{"role": "assistant", "content": ex.response}]


def row_example(row: Mapping, where: str = "row") -> Example:
    """A stored pool row (a line of selected.jsonl, a row of the pool file) read as the pool reads it; a row that
    does not validate raises DataError naming `where`."""
    return _parse_row(dict(row), 0, where, "")


def row_turns(row: Mapping, where: str = "row") -> list[dict[str, str]]:
    return example_turns(row_example(row, where))


def messages_record(turns: list[dict[str, str]]) -> dict:
    return {"messages": turns}
