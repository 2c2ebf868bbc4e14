"""The examples table: filters, one example in detail (and as the model saw it), nearest targets (the export is
gist_core.runner.export, shared with `gist-lab export`)."""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pandas as pd

from gist_core.data.examples import missing
from gist_core.data.formatting import IGNORE, encode_pair
from gist_core.methods import scoring
from gist_core.store.layout import RunLayout
from gist_core.viewer.labels import group_column
from gist_core.viewer.rescore import Rescored
from gist_core.viewer.rundir import arrays, base_frame, run_config, target_frame


def filter_frame(frame: pd.DataFrame, *, sources=None, skills=None, kinds=None, selected: str = "all",
                 text: str = "", score_range: tuple[float, float] | None = None, domains=None) -> pd.DataFrame:
    """Rows matching every given filter (None / empty = no filter on that column)."""
    m = np.ones(len(frame), dtype=bool)
    for col, vals in (("source", sources), ("skill", skills), ("kind", kinds), ("domain", domains)):
        if vals:
            m &= group_column(frame, col, []).isin(vals).to_numpy()
    if selected == "selected":
        m &= frame["selected"].to_numpy()
    elif selected == "not selected":
        m &= ~frame["selected"].to_numpy()
    elif selected == "working selection":  # the `working` column of viewer.curation.mark_working
        m &= frame["working"].to_numpy()
    if text:
        pat = re.escape(text)
        m &= (frame["prompt"].str.contains(pat, case=False, na=False)
              | frame["response"].str.contains(pat, case=False, na=False)
              | frame["id"].astype(str).str.contains(pat, case=False, na=False)).to_numpy()
    if score_range:
        s = frame["score"].to_numpy()
        m &= (s >= score_range[0]) & (s <= score_range[1])
    return frame[m]


TABLE_COLUMNS = ("rank", "score", "id", "source", "skill", "kind", "domain", "n_tokens", "selected", "selected_global",
                 "selected_subtask", "prompt", "response")
LABEL_COLUMNS = ("source", "skill", "kind", "domain")


def table_columns(frame: pd.DataFrame) -> list[str]:
    """The Examples table's columns that say something: a label column with no value at all (skill and kind on a
    real pool such as ShareGPT, which has no ground truth) is left out rather than shown as a column of None."""
    return [c for c in TABLE_COLUMNS if c in frame and not (c in LABEL_COLUMNS and frame[c].isna().all())]


def label_line(detail: dict) -> str:
    """`source x · skill y · ...` for the drill-down, naming only the labels the example has."""
    return " · ".join(f"{k} {detail[k]}" for k in LABEL_COLUMNS if not missing(detail.get(k)))


PREVIEW_CHARS = 1500  # a long row (a ShareGPT answer, a program) shows this much until "show all"


def preview(text: str, limit: int = PREVIEW_CHARS) -> tuple[str, bool]:
    """(the text cut at a line end near `limit` characters, whether anything was cut). A cut never splits a
    fenced code block open: an odd number of ``` fences gets a closing one."""
    if len(text) <= limit:
        return text, False
    cut = text.rfind("\n", 0, limit)
    head = text[: cut if cut > limit // 2 else limit]
    if head.count("```") % 2:
        head += "\n```"
    return head, True


def looks_like_markdown(text: str) -> bool:
    """Text written in Markdown (chat answers: fenced code, headings, lists): rendered as Markdown, else as plain
    wrapped text (a synthetic row's '*' or '#' must not turn into formatting)."""
    return "```" in text or bool(re.search(r"^(#{1,6} |\s*[-*] |\s*\d+\. )", text, re.M))


def options(frame: pd.DataFrame, col: str) -> list[str]:
    return sorted(group_column(frame, col, []).unique().tolist()) if col in frame else []


def example_detail(rs: Rescored, row: int) -> dict:
    """One pool example: text, labels, score/rank, per-subtask cosines, selection under both rules."""
    r = rs.frame.iloc[row]
    cos = pd.DataFrame({"subtask": rs.subtasks, "cosine": [float(r[f"cos:{s}"]) for s in rs.subtasks]})
    return {"row": int(row), "id": r["id"], "prompt": r["prompt"], "response": r["response"],
            "source": r.get("source"), "skill": r.get("skill"), "kind": r.get("kind"), "domain": r.get("domain"),
            "score": float(r["score"]),
            "rank": int(r["rank"]), "n_tokens": int(r["n_tokens"]) if "n_tokens" in r else None,
            "selected": {rule: bool(r[f"selected_{rule}"]) for rule in scoring.BALANCES}, "cosines": cos}


@functools.lru_cache(maxsize=4)
def run_tokenizer(model: str):
    """The run's own tokenizer (a GGUF or registry model: its converted folder), loaded once per model. Never
    with remote code: a run folder is data, and whoever can drop one into the runs folder must not be able to
    make the dashboard run a model folder's Python (a tokenizer that needs it fails to load instead)."""
    from gist_core.model.load import load_tokenizer  # lazy: imports torch and transformers, which drawing a page must not
    return load_tokenizer(model, trust_remote_code=False)


def model_input(run_dir: str | Path, row: int) -> dict:
    """Pool example `row` as the model saw it: the run's tokenizer, chat template and max_length, decoded back
    to text with special tokens shown; `response` is exactly the tokens in the loss (and so in the gradient)."""
    cfg = run_config(run_dir)
    if not cfg.get("model"):
        raise FileNotFoundError(f"{run_dir}: no {RunLayout(run_dir).config.name} naming the model")
    tok = run_tokenizer(cfg["model"])
    ex = base_frame(run_dir).iloc[int(row)]  # the page's own cached frame: no second read of the text
    # examples.parquet keeps a chat row's last user turn as its prompt, not the turns before it
    ids, labels, cut = encode_pair(tok, ex["prompt"], ex["response"], int(cfg.get("max_length", 256)))
    start = next((i for i, y in enumerate(labels) if y != IGNORE), len(ids))
    return {"prompt": tok.decode(ids[:start], skip_special_tokens=False),
            "response": tok.decode(ids[start:], skip_special_tokens=False),
            "n_prompt": start, "n_response": len(ids) - start, "truncated": bool(cut),
            "chat_template": bool(getattr(tok, "chat_template", None)), "tokenizer": type(tok).__name__,
            "model": cfg["model"]}


def nearest_targets(run_dir: str | Path, row: int, rank: int, k: int = 5) -> pd.DataFrame:
    """The k target (validation) examples whose coordinates are closest in cosine to pool row `row` at rank r."""
    a = arrays(run_dir)
    x = np.asarray(a.X[row, :rank], dtype=np.float64)
    Y = np.asarray(a.val_coords[:, :rank], dtype=np.float64)
    cos = (Y @ x) / np.maximum(np.linalg.norm(Y, axis=1) * np.linalg.norm(x), 1e-300)
    order = np.argsort(-cos, kind="stable")[:k]
    t = target_frame(run_dir)
    out = t.iloc[order][["id", "subtask", "prompt", "response"]].reset_index(drop=True)
    out.insert(0, "cosine", cos[order])
    return out


# ----------------------------------------------------------------------------- spectrum
