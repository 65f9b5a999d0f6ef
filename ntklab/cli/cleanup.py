"""`ntklab rm`, `ntklab gc`, `ntklab reset`: removing runs, freeing the files no run references,
and starting one run again (logic in ntklab/db/cleanup.py and ntklab/db/garbage.py)."""

import sys
from typing import Annotated, Optional

import typer

from ntklab.cli.common import (DbOption, ExperimentOption, HomeOption, OptionalRunsArgument, RunArgument, app,
                               err, existing_engine, experiment_name, out, reported, styled)
from ntklab.errors import UsageError

YesOption = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Not asked without a terminal: pass --yes")
    return typer.confirm(question, default=False)


@app.command()
@reported
def rm(
    run_keys: OptionalRunsArgument = None,
    experiment: ExperimentOption = None,
    status_: Annotated[Optional[list[str]], typer.Option("--status", "-s", metavar="STATUS",
                                                         help="only runs with this status (repeatable)")] = None,
    yes: YesOption = False,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Remove runs, or an experiment's runs, from the database, after a listing and a confirmation.

    A run that also belongs to another experiment only leaves this one; a run that a remaining run
    needs as its upstream, and a running run, stay. Their files are freed by `ntklab gc`."""
    from ntklab.db.cleanup import apply_removal, plan_removal
    from ntklab.db.connection import reading, writing
    from ntklab.db.tables import RunStatus
    from ntklab.reports.overview import ensure_experiment, resolve_run
    from ntklab.tabular import emit

    if not run_keys and experiment is None:
        raise UsageError("name the runs to remove, or --experiment NAME")
    for status in status_ or ():
        if status not in {s.value for s in RunStatus}:
            raise UsageError(f"unknown status {status!r}; one of {', '.join(s.value for s in RunStatus)}")
    name = experiment_name(experiment) if experiment else None
    engine, _ = existing_engine(db, home, writable=True)
    with reading(engine) as conn:
        if name is not None:
            ensure_experiment(conn, name)
        ids = [resolve_run(conn, key) for key in run_keys] if run_keys else None
        removal = plan_removal(conn, ids, name, status_ or ())
    if not removal.runs:
        out.print("no runs match: nothing to remove", highlight=False)
        return
    emit(["run", "status", "in", "action"],
         [[r.key[:12], r.status, ", ".join(f"{e}/{g}" for e, g in r.memberships), r.action] for r in removal.runs],
         "table", out)
    deleting, leaving = removal.count("delete"), removal.count("leave")
    if not deleting and not leaving:
        out.print("every run listed stays: nothing to remove", highlight=False)
        return
    summary = f"delete {deleting} runs" + (f", take {leaving} shared runs out of {name}" if leaving else "")
    summary += f" and the experiment {name}" if removal.experiment else ""
    if not _confirm(f"{summary}?", yes):
        out.print("nothing was removed", highlight=False)
        return
    with writing(engine) as conn:
        apply_removal(conn, removal)
    out.print(f"removed: {summary.removeprefix('delete ')}; `ntklab gc` frees their files", highlight=False)


@app.command()
@reported
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", "-n", help="list what would be deleted, delete nothing")] = False,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Delete the artifact files, kernel stores, checkpoints and logs in the home that no run in the
    database references, and print what that frees. Files of remaining runs are never touched."""
    from ntklab.db.connection import reading
    from ntklab.db.garbage import delete_garbage, unreferenced
    from ntklab.tabular import emit, size_text

    engine, store = existing_engine(db, home)
    with reading(engine) as conn:
        garbage = unreferenced(conn, store)
    if not garbage:
        out.print(f"nothing to free in {store.root}", highlight=False)
        return
    total = sum(g.bytes for g in garbage)
    emit(["path", "kind", "bytes"], [[str(g.path), g.kind, g.bytes] for g in garbage], "table", out)
    if dry_run:
        out.print(f"would free {size_text(total)} in {len(garbage)} files and directories (dry run)", highlight=False)
        return
    freed = delete_garbage(store, garbage)
    out.print(f"freed {size_text(freed)} in {len(garbage)} files and directories", highlight=False)


@app.command()
@reported
def reset(
    run_key: RunArgument,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Put one run back to pending: its metrics, artifact rows and checkpoint are forgotten and the
    next `ntklab run` of a spec that has it runs it from scratch (its attempts stay in the history)."""
    from ntklab.db.cleanup import reset_run
    from ntklab.db.connection import writing
    from ntklab.reports.overview import resolve_run

    engine, store = existing_engine(db, home, writable=True)
    with writing(engine) as conn:
        key = reset_run(conn, resolve_run(conn, run_key))
    store.forget_run_files(key)
    err.print(styled("reset", "green", f"{key[:12]} is pending; run its spec to execute it again"), highlight=False)
