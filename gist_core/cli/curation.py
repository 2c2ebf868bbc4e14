"""`gist-lab curate` and `gist-lab export`: edit a run's working selection from the shell, and write it (or any
rows) as a training file (gist_core.runner.curation, gist_core.runner.export; the flags are in parsers.py)."""
from __future__ import annotations

import sys

from gist_core.errors import CurationError
from gist_core.runner import curation
from gist_core.runner.export import FROM_EXAMPLES, export_selection, provenance_path
from gist_core.store.layout import RunLayout
from gist_core.viewer import curation as curation_view
from gist_core.viewer import rescore, rundir


def cmd_curate(a) -> int:
    edits = bool(a.add or a.remove or a.exclude)
    taking = a.take_rank is not None
    if edits + a.undo + a.reset + taking > 1:
        raise CurationError("--undo, --reset, --take-rank and an edit (--add, --remove, --exclude) go in separate "
                            "commands")
    if not taking and (a.rule or a.budget is not None or a.score):
        raise CurationError("--rule, --budget and --score go with --take-rank")
    say = print if not a.ids else (lambda *x: print(*x, file=sys.stderr))  # --ids: stdout holds the ids alone
    if edits:
        c = curation.edit(a.run, add=a.add, remove=a.remove, exclude=a.exclude, view=a.from_view)
        for op in c.edits.ops[-(bool(a.add) + bool(a.remove) + len(a.exclude)):]:
            say(f"recorded: {op.describe()}")
    elif taking:
        c = take_rank(a)
        last = c.edits.ops[-1]
        for op in c.edits.ops[-2:]:  # the remove and the add it recorded (one of them when the other had no rows)
            if (op.view, op.at) == (last.view, last.at):
                say(f"recorded: {op.describe()}")
    elif a.undo:
        op, c = curation.undo(a.run)
        say(f"undone: {op.describe()}")
    elif a.reset:
        c = curation.reset(a.run)
        say("every edit dropped: the working selection is the method's selection")
    else:
        c = curation.working_selection(a.run)
    show(c, say)
    if a.ids:
        print("\n".join(c.working))
    return 0


def take_rank(a) -> curation.Curation:
    """The selection the dashboard shows at rank R (and the run's rule, budget and score unless given) made the
    working selection: the same re-scoring (viewer.rescore) and the same edits (runner.curation.take)."""
    run = curation.check_run(a.run)
    settings = rescore.default_settings(rundir.load_run(run))
    r_max = rundir.r_max(run)
    if not 1 <= a.take_rank <= r_max:
        raise CurationError(f"--take-rank {a.take_rank}: the run stores ranks 1..{r_max}")
    kind = a.score or settings["kind"]
    if kind not in rundir.arrays(run).kinds:
        raise CurationError(f"--score {kind}: {rundir.OLD_SCORE_NOTE}")
    try:
        rs = rescore.rescored_frame(run, a.take_rank, a.rule or settings["balance"],
                                    settings["budget"] if a.budget is None else a.budget, kind)
    except ValueError as e:  # a budget out of range
        raise CurationError(f"--budget {a.budget}: {e}") from None
    ids = curation_view.selection_ids(rs)
    return curation.take(run, ids, curation.selection_view(rs.rank, rs.balance, len(ids), rs.kind))


def show(c: curation.Curation, say=print) -> None:
    n, p = c.counts, c.pool
    say(f"{p.run}: the method's selection (rule {p.rule}, rank {p.summary.get('rank', '-')}) {n['method']} rows; "
        f"working selection {n['working']} rows (+{n['added']} added, -{n['removed']} removed) after {n['edits']} "
        "edit(s)")
    for i, op in enumerate(c.edits.ops, 1):
        say(f"  {i}. {op.describe()}")
    if c.edits.ops:
        say(f"edits: {RunLayout(p.run).curation_edits}")
    if c.base_changed:
        print(f"warning: the method's selection of {p.run} changed since these edits were made (the run was redone); "
              "they replay over the new one", file=sys.stderr)


def cmd_export(a) -> int:
    rec = export_selection(a.run, a.out, a.format, ids=a.rows, overwrite=a.overwrite)
    c = rec["counts"]
    print(f"{a.out}: {rec['n_rows']} rows ({rec['format']}, pool order) from the {rec['selection']} of {a.run} "
          f"({c['of_them_in_method_selection']} of the method's {c['method']}, {c['added']} added)")
    for note in rec["notes"]:
        print(f"note: {rec['rows_from'][FROM_EXAMPLES]} row(s) written from {FROM_EXAMPLES}'s fields: {note}",
              file=sys.stderr)
    print(f"provenance: {provenance_path(a.out)}")
    return 0
