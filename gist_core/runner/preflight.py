"""Checks of a run's inputs that need no model and write nothing: they run before the run folder is touched."""
from __future__ import annotations

import logging

from gist_core.data.examples import Example
from gist_core.errors import ConfigError

log = logging.getLogger(__name__)


def check_target(target: list[Example], aggregation: str) -> None:
    """At least two validation examples (with one, the subspace has one direction, every in-subspace score is
    +1 or -1 and the top-k is the pool's row order); a named subtask with a single example is allowed but said
    plainly, since its target direction is then that one example's gradient."""
    if len(target) < 2:
        raise ConfigError(f"the target has {len(target)} example: GIST needs at least 2 validation examples (with one, "
                          "every score is +1 or -1 and the selection is the pool's row order)")
    sizes: dict[str, int] = {}
    for ex in target:
        if ex.subtask is not None:
            sizes[ex.subtask] = sizes.get(ex.subtask, 0) + 1
    singles = sorted(s for s, n in sizes.items() if n == 1)
    if singles and aggregation == "subtask_mean":
        log.warning(f"note: subtask(s) {', '.join(repr(s) for s in singles[:5])}{' ...' if len(singles) > 5 else ''} "
                    "have a single validation example: that example's gradient alone is the subtask's target direction "
                    "(nothing averages its noise out), and per-subtask rules still give it a full share")
