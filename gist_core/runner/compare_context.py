"""What a compare's stages share, handed to each explicitly: the run's context and inputs, the compare's settings,
the target's subtask groups, the selection size, the cost book, and the notes each method leaves for the report.

Each method's compare stages live in its own folder (gist_core.methods.<name>.stages) and are functions of this
context; `Compare` (runner/compare.py) builds it once the run's own stages are done and calls them in order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from gist_core.config import CompareConfig, RunConfig
from gist_core.runner.context import RunContext, RunInputs
from gist_core.runner.costs import CostBook


@dataclass
class CompareContext:
    run: RunContext
    inputs: RunInputs
    cmp: CompareConfig
    groups: dict[str, list[int]]
    k: int                   # examples each method selects
    book: CostBook
    model_path: str          # the folder the run's model resolved to
    test_spec: str | None    # the target's test split (downstream), None when there is none
    notes: dict = field(default_factory=dict)  # per method, what the report says about how it was computed
    cache: dict = field(default_factory=dict)  # objects built once per compare (LESS's projector)

    @property
    def cfg(self) -> RunConfig:
        return self.run.cfg
