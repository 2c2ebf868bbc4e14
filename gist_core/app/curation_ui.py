"""The working selection in the dashboard: one small set of widgets every view shares (Map, Scores, Examples,
Curate): its status line with Undo, the "Add N / Remove N" buttons over the rows a view points at, the relation to
the selection a page shows at its rank, and the downloads.

Edits go through gist_core.runner.curation (the same calls as `gist-lab curate`), downloads through
gist_core.runner.export.build_export (the same lines and record as `gist-lab export`). A button's edit runs in its
callback, before the page is drawn again, so every count on the page already includes it; its outcome (or why it
was refused: a job writing the run holds its lock) is said beside the button on that run.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from gist_core.app import ui
from gist_core.errors import CurationError, StoreError
from gist_core.runner import curation, export
from gist_core.store import lock
from gist_core.viewer import curation as curation_view
from gist_core.viewer.rescore import Rescored

FORMAT_NAMES = {"rows": "original rows", "messages": "chat messages"}


def working(run_dir: Path) -> curation.Curation | None:
    """The run's working selection, or None after saying why it cannot be read (an edits file that no longer fits
    the run: the message names the command that resets it)."""
    try:
        return ui.folder_view(curation_view.working, run_dir)
    except (CurationError, StoreError) as e:
        st.error(f"The working selection cannot be read: {e}", icon=":material/error:")
        return None


# ----------------------------------------------------------------------------- edits, made in callbacks
def _message_key(key: str) -> str:
    return f"curation_message:{key}"


def _record(key: str, make) -> None:
    """Run an edit; keep what to say about it for the next draw (a refused edit changes nothing)."""
    try:
        said = make()
    except (CurationError, StoreError) as e:  # RunLockedError among them: a job writes the run
        st.session_state[_message_key(key)] = ("error", f"Not recorded: {e}")
    else:
        st.session_state[_message_key(key)] = ("success", said)


def said(key: str, container=st) -> None:
    """Say what the last edit made under `key` did (or why it was refused), once."""
    _say(key, container)


def exclude(run_dir: Path, group: str, key: str) -> None:
    """Button callback: exclude the group KEY=VALUE, recorded as from the Curate page."""
    _record(key, lambda: _exclude(run_dir, group, "curate page"))


def reset(run_dir: Path, key: str) -> None:
    """Button callback: drop every edit."""
    _record(key, lambda: _reset(run_dir))


def _say(key: str, container=st) -> None:
    kind, text = st.session_state.pop(_message_key(key), (None, None))
    if kind == "error":
        container.error(text, icon=":material/block:")
    elif kind == "success":
        container.success(text, icon=":material/check:")


def _edit(run_dir: Path, action: str, ids: list[str], view: str) -> str:
    curation.edit(run_dir, **{action: ids}, view=view)
    return f"{'Removed' if action == 'remove' else 'Added'} {len(ids):,} row(s) ({view})."


def _exclude(run_dir: Path, group: str, view: str) -> str:
    c = curation.edit(run_dir, exclude=[group], view=view)
    return f"Excluded {group}: {len(c.edits.ops[-1].ids):,} pool row(s) out of the working selection."


def _undo(run_dir: Path) -> str:
    op, _ = curation.undo(run_dir)
    return f"Undone: {op.describe()}."


def _reset(run_dir: Path) -> str:
    curation.reset(run_dir)
    return "Every edit dropped: the working selection is the method's selection again."


def _take(run_dir: Path, ids: tuple[str, ...], view: str) -> str:
    c = curation.take(run_dir, ids, view)
    return f"The working selection is now the {len(c.working):,} rows of the {view}."


def locked_warning(run_dir: Path) -> bool:
    """Say so when a job writes the run now (edits would be refused); True then."""
    rec = lock.holder(run_dir)
    if rec is not None:
        st.warning(f"A job is writing this run ({lock.describe(rec)}): edits are refused until it finishes.",
                   icon=":material/lock:")
    return rec is not None


# ----------------------------------------------------------------------------- the shared widgets
def status(run_dir: Path, c: curation.Curation, key: str) -> None:
    """The working selection's status line with its Undo button."""
    left, right = st.columns([5, 1], vertical_alignment="center")
    left.markdown(curation_view.status_text(c))
    last = c.edits.ops[-1].describe() if c.edits.ops else "no edit to undo"
    right.button("Undo", key=f"{key}_undo", icon=":material/undo:", disabled=not c.edits.ops, help=f"undo: {last}",
                 on_click=_record, args=(f"{key}_status", lambda: _undo(run_dir)), width="stretch")
    if c.base_changed:
        st.warning("The method's selection changed since these edits were made (the run was redone); they replay "
                   "over the new one.", icon=":material/warning:")
    _say(f"{key}_status")


def edit_buttons(run_dir: Path, c: curation.Curation, ids: list[str], view: str, key: str) -> None:
    """"Remove N from / Add N to the working selection" for the rows `ids` a view points at: only the rows that
    would change are counted and sent; the edit records `view`."""
    to_add, to_remove = curation_view.pending(c.working, ids)
    b = st.columns(3, vertical_alignment="center")
    b[0].button(f"Remove {len(to_remove):,} from the working selection", key=f"{key}_remove",
                icon=":material/remove_circle:", disabled=not to_remove, width="stretch",
                on_click=_record, args=(key, lambda: _edit(run_dir, "remove", to_remove, view)))
    b[1].button(f"Add {len(to_add):,} to the working selection", key=f"{key}_add", icon=":material/add_circle:",
                disabled=not to_add, width="stretch",
                on_click=_record, args=(key, lambda: _edit(run_dir, "add", to_add, view)))
    b[2].caption(f"In the working selection ({len(c.working):,} rows): {len(to_remove):,} of these "
                 f"{len(to_remove) + len(to_add):,}. The edit is recorded as from the {view}.")
    _say(key)


def shown_selection(run_dir: Path, c: curation.Curation, rs: Rescored, key: str) -> None:
    """Where the selection a page shows (its rank, rule, budget, score) is not the working selection's base (the
    run's stored selection), say so, and offer to take it as the working selection: one remove and one add edit,
    recorded as from that rank's selection (`gist-lab curate --take-rank` records the same)."""
    shown = curation_view.selection_ids(rs)
    rel = curation_view.shown_against_working(shown, c)
    if rel["is_base"]:
        return
    view = curation.selection_view(rs.rank, rs.balance, len(shown), rs.kind)
    rank = c.pool.summary.get("rank")
    text = (f"The selection shown here (rank r = {rs.rank}, {rs.balance} rule, {rel['shown']:,} rows) is not the "
            f"working selection's base, the run's stored selection ({rel['base']:,} rows"
            + (f" at r = {rank}" if rank else "") + f"): {rel['differ_from_base']:,} rows differ. Edits and exports "
            "use the working selection.")
    if rel["is_working"]:
        st.caption(text + " The working selection is this shown selection now (taken as edits).")
        return
    left, right = st.columns([3, 2], vertical_alignment="center")
    left.caption(text)
    right.button(f"Take the shown selection (+{rel['to_add']:,} −{rel['to_remove']:,})",
                 key=f"{key}_take", icon=":material/published_with_changes:", width="stretch",
                 help=f"make the {rel['shown']:,} rows shown the working selection: two ordinary edits (remove, "
                      f"add) from the '{view}'; Undo takes them back one by one",
                 on_click=_record, args=(f"{key}_take", lambda: _take(run_dir, shown, view)))
    _say(f"{key}_take")


def downloads(run_dir: Path, ids: tuple[str, ...] | None, what: str, stem: str, key: str) -> None:
    """Download buttons for `ids` (None: the working selection) as a training file in the chosen format, and its
    provenance record: built when clicked, by the export `gist-lab export` writes (runner.export.build_export)."""
    if ids is None:
        c = working(run_dir)
        if c is None:  # said why above
            return
        n = len(c.working)
    else:
        n = len(ids)
    cols = st.columns([2, 3, 2], vertical_alignment="bottom")
    fmt = cols[0].radio("Format", list(FORMAT_NAMES), format_func=FORMAT_NAMES.get, horizontal=True, key=f"{key}_format",
                     help="original rows: every field the pool row had, plus score (as selected.jsonl keeps it); "
                          "chat messages: {\"messages\": [{\"role\", \"content\"}, ...]} per row")
    name = f"{stem}-{fmt}.jsonl"
    cols[1].download_button(f"Download {what} ({n:,} rows)", data=_deferred(run_dir, fmt, ids, name, False),
                         file_name=name, mime="application/jsonl", key=f"{key}_file", icon=":material/download:",
                         on_click="ignore", disabled=n == 0, width="stretch")
    cols[2].download_button("Provenance record (JSON)", data=_deferred(run_dir, fmt, ids, name, True),
                         file_name=str(export.provenance_path(name)), mime="application/json",
                         key=f"{key}_provenance", icon=":material/receipt_long:", on_click="ignore", disabled=n == 0,
                         width="stretch", help="where the file came from: the run, method, rule and rank, the edits, "
                                               "counts, the rows' ids and the file's sha256 (as FILE.provenance.json)")


def _deferred(run_dir: Path, fmt: str, ids: tuple[str, ...] | None, name: str, record: bool):
    """The download's bytes, made only when the button is clicked (Streamlit calls it on another thread, so it
    touches no Streamlit state): the exported lines, or their provenance record."""
    def build() -> bytes:
        ex = export.build_export(run_dir, fmt, None if ids is None else list(ids), file=name)
        return ex.provenance_json().encode("utf-8") if record else ex.data
    return build
