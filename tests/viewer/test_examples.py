"""gist_core/viewer/examples.py's table helpers on a real-pool-shaped frame (labels missing, as on ShareGPT)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from gist_core.data.examples import missing
from gist_core.viewer import examples


def test_label_columns_without_any_value_are_left_out_of_the_table():
    real = pd.DataFrame({"rank": [1, 2], "score": [0.2, 0.1], "id": ["a", "b"], "source": ["sharegpt"] * 2,
                         "skill": [None, None], "kind": [None, None], "domain": ["code", "math"], "n_tokens": [9, 7],
                         "selected": [True, False], "prompt": ["p", "q"], "response": ["r", "s"]})
    assert examples.table_columns(real) == ["rank", "score", "id", "source", "domain", "n_tokens", "selected",
                                            "prompt", "response"]
    synthetic = real.assign(skill=["lookup", None], kind=["correct", "wrong"])  # one value is enough to keep it
    assert {"skill", "kind"} <= set(examples.table_columns(synthetic))


def test_the_drill_down_line_names_only_the_labels_an_example_has():
    d = {"source": "sharegpt", "skill": None, "kind": float("nan"), "domain": "code"}  # a parquet gives NaN
    assert examples.label_line(d) == "source sharegpt · domain code"


def test_one_missing_value_test_for_the_drill_down():
    assert all(missing(v) for v in (None, float("nan"), np.float32("nan"), pd.NA))
    assert not any(missing(v) for v in ("", "x", 0, 0.0, np.float32(1.5), False))
    assert examples.label_line({"source": "s", "skill": pd.NA, "kind": np.float32("nan")}) == "source s"
