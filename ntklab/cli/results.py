"""The read commands: `status`, `query`, `report`, `show`, `logs`."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ntklab.cli.common import (MAX_COUNT, DbOption, ExperimentOption, FormatOption, HomeOption,
                               OptionalExperimentArgument, OutputFormat, RunArgument, app, err, existing_engine,
                               experiment_name, out, reported, styled)
from ntklab.errors import UsageError


@app.command()
@reported
def status(
    experiment: OptionalExperimentArgument = None,
    db: DbOption = None,
    home: HomeOption = None,
    format_: FormatOption = OutputFormat.table,
) -> None:
    """Counts of runs by status per experiment and group, and the progress of running runs."""
    from ntklab.db.connection import reading
    from ntklab.db.liveness import lost_runs
    from ntklab.db.tables import RunStatus
    from ntklab.reports.overview import experiment_status
    from ntklab.headline import headline_text
    from ntklab.tabular import duration_text, emit

    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        groups = experiment_status(conn, experiment_name(experiment) if experiment else None)
        lost = len(lost_runs(conn))
    names = [s.value for s in RunStatus]
    rows = [[g.experiment, g.group] + [g.counts.get(n, 0) for n in names] + [sum(g.counts.values())] for g in groups]
    emit(["experiment", "group", *names, "total"], rows, format_.value, out)
    if format_ == OutputFormat.table:
        for g in groups:
            for r in g.running:
                parts = [f"step {r['step']}/{r['total']}" if r["total"] else "starting"]
                if r["metric"]:
                    parts.append(headline_text(dict([r["metric"]])))
                if r["eta_seconds"] is not None:
                    parts.append(f"ETA {duration_text(r['eta_seconds'])}")
                out.print(f"running {r['key'][:12]} ({g.experiment}/{g.group}): {'  '.join(parts)} on {r['worker']}",
                          highlight=False)
    if lost:
        err.print(styled("lost", "yellow", f"{lost} running runs have no live worker; `ntklab reap` (or the next "
                         "`ntklab run`) marks them interrupted, and they resume from their last checkpoint"),
                  highlight=False)
    if format_ == OutputFormat.table:
        _print_jobs(engine, experiment_name(experiment) if experiment else None)


def _print_jobs(engine, experiment: str | None) -> None:
    """The experiments' Slurm jobs, when they have any: state, and the run each one executes."""
    from ntklab.runner.jobs import experiment_jobs
    from ntklab.tabular import emit

    found = experiment_jobs(engine, experiment)
    if found:
        emit(["experiment", "job", "state", "run"], [[j.experiment, j.job_id, j.state, (j.running or "")[:12]]
                                                     for j in found], "table", out, title="jobs")


@app.command()
@reported
def query(
    figure: Annotated[Optional[str], typer.Argument(metavar="FIGURE", help="with --paper: a figure, as NAME or EXPERIMENT:NAME")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="print the data of a figure declared in a spec (without FIGURE: list the figures)")] = False,
    experiment: ExperimentOption = None,
    group: Annotated[Optional[list[str]], typer.Option("--group", "-g", metavar="GROUP", help="group name (repeatable)")] = None,
    status_: Annotated[Optional[list[str]], typer.Option("--status", "-s", metavar="STATUS", help="run status (repeatable)")] = None,
    where: Annotated[Optional[str], typer.Option("--where", "-w", metavar="FILTER", help="filter, e.g. \"model.arch == 'mlp' and test_accuracy > 0.9\"")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", metavar="COLUMNS", help="comma-separated columns")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", metavar="N", min=1, max=MAX_COUNT, help="at most this many runs")] = None,
    format_: FormatOption = OutputFormat.table,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """List runs with their params and metrics, filtered by experiment, group, status and a boolean filter.

    With --paper: the table behind a figure of a spec (`ntklab query --paper fig2`), from whatever runs
    are in the database; without a figure name, the figures the database knows."""
    from ntklab.db.connection import reading
    from ntklab.reports.runs import list_runs
    from ntklab.tabular import emit

    experiment = experiment_name(experiment) if experiment else None
    if paper or figure is not None:
        _query_paper(figure, paper, experiment, format_, db, home,
                     others=bool(group or status_ or where or columns or limit is not None))
        return
    engine, _ = existing_engine(db, home)
    chosen = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    with reading(engine) as conn:
        table = list_runs(conn, experiment=experiment, groups=group or (), statuses=status_ or (), where=where,
                          columns=chosen, limit=limit)
    rows = table.rows
    if format_ == OutputFormat.table and "key" in table.columns:
        index = table.columns.index("key")
        rows = [[v[:12] if i == index and isinstance(v, str) else v for i, v in enumerate(row)] for row in rows]
    emit(table.columns, rows, format_.value, out)


def _query_paper(figure: str | None, paper: bool, experiment: str | None, format_: OutputFormat, db, home,
                 others: bool) -> None:
    from ntklab.db.connection import reading
    from ntklab.reports.aggregation import missing_text
    from ntklab.reports.figures import figure_data, resolve_figure, stored_figures
    from ntklab.tabular import emit

    if not paper:
        raise UsageError(f"a figure name goes with --paper: ntklab query --paper {figure}")
    if others:
        raise UsageError("--paper prints a figure as its spec declares it; --group, --status, --where, --columns "
                         "and --limit do not apply (put a filter in the figure's `where:`)")
    if figure is not None and experiment is not None and ":" not in figure:
        figure = f"{experiment}:{figure}"
    engine, store = existing_engine(db, home)
    with reading(engine) as conn:
        if figure is None:
            stored = stored_figures(conn, experiment)
            listing = [[f.experiment, f.name, f.figure.kind, f.figure.x, ", ".join(f.figure.y_names),
                        f.figure.series, f.figure.facet, f.figure.step, f.figure.title] for f in stored.figures]
            for qualified, problem in stored.problems.items():
                err.print(styled("invalid", "yellow", f"{qualified}: {problem}"), highlight=False)
            if not listing and format_ == OutputFormat.table:
                err.print("no figures in the database: declare them under `figures:` in a spec and run it")
                return
            emit(["experiment", "figure", "kind", "x", "y", "series", "facet", "step", "title"], listing,
                 format_.value, out)
            return
        data = figure_data(conn, resolve_figure(conn, figure), store.root)
    title = f"{data.experiment}:{data.name}" + (f" — {data.figure.title}" if data.figure.title else "")
    rows = [[v[:12] if c == "run" and isinstance(v, str) else v for c, v in zip(data.columns, row)]
            for row in data.rows] if format_ == OutputFormat.table else data.rows
    emit(data.columns, rows, format_.value, out, title=title if format_ == OutputFormat.table else None)
    err.print(data.describe(), highlight=False, style="dim")
    if data.missing:
        reasons: dict[str, int] = {}
        for m in data.missing:
            reasons[m.reason] = reasons.get(m.reason, 0) + 1
        err.print(f"{len(data.missing)} of {data.total_runs} runs are not in the figure yet: {missing_text(reasons)}",
                  highlight=False)
        for m in data.missing[:20]:
            detail = f": {m.error}" if m.error else ""
            err.print(f"  {m.key[:12]} ({m.group}) {m.reason}{detail}", highlight=False)
        if len(data.missing) > 20:
            err.print(f"  ... and {len(data.missing) - 20} more", highlight=False)


@app.command()
@reported
def report(
    target: Annotated[str, typer.Argument(metavar="SPEC_OR_EXPERIMENT", help="a spec file, or the name of an experiment in the database")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="the HTML file (default: ./EXPERIMENT-report.html)")] = None,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Write one self-contained HTML report of an experiment: figures, tables, runs, failures, provenance, spec."""
    import os

    from ntklab.db.connection import reading
    from ntklab.reports.html import render_report
    from ntklab.store import atomic_write

    spec_path = Path(target)
    figures = spec_text = spec_file = None
    if spec_path.is_file():
        from ntklab.spec.load import load_spec
        from ntklab.tasks import registry

        plan = load_spec(spec_path, tasks=registry)
        name, figures, spec_text, spec_file = plan.name, plan.figures, plan.text, str(spec_path)
    elif target.endswith((".yaml", ".yml")) or "/" in target:
        raise UsageError(f"no spec file {target!r} (give a spec file or the name of an experiment)")
    else:
        name = target
    engine, store = existing_engine(db, home)
    problems: list[str] = []
    with reading(engine) as conn:
        page = render_report(conn, name, figures=figures, spec_text=spec_text, spec_file=spec_file, home=store.root,
                             problems=problems)
    for problem in problems:
        err.print(styled("warning", "yellow", problem), highlight=False)
    path = output or Path(f"{name}-report.html")
    atomic_write(path.absolute(), page.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # a report is for reading: not the 0600 of a temporary file
    out.print(f"wrote {path} ({len(page.encode('utf-8')) / 1e6:.1f} MB)", highlight=False)


@app.command()
@reported
def show(
    run_key: RunArgument,
    format_: FormatOption = OutputFormat.table,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Everything recorded about one run: config, status, error, provenance, metrics, artifacts."""
    import yaml

    from ntklab.db.connection import reading
    from ntklab.reports.overview import resolve_run, run_record
    from ntklab.tabular import emit

    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        record = run_record(conn, resolve_run(conn, run_key))
    if format_ != OutputFormat.table:
        emit(list(record), [list(record.values())], format_.value, out)
        return
    where = ", ".join(f"{m['experiment']}/{m['group']}" for m in record["memberships"])
    out.print(styled(f"run {record['key']}", "bold", f" {where}  task {record['task']}"), highlight=False)
    out.print(f"status {record['status']}  attempts {record['attempts']}  started {record['started_at']}  "
              f"finished {record['finished_at']}  checkpoint step {record['checkpoint_step']}", highlight=False)
    if record["error_type"]:
        out.print(styled(f"{record['error_type']}:", "red", record["error_message"]), highlight=False)
        if record["traceback"]:
            out.print(record["traceback"], highlight=False)
    out.print(styled("config", "bold"))
    out.print(yaml.safe_dump(record["config"], sort_keys=False).rstrip(), highlight=False)
    if record["metrics"]:
        emit(["metric", "last", "last_step", "min", "min_step", "max", "max_step"],
             [[m["name"], m["last"], m["last_step"], m["min"], m["min_step"], m["max"], m["max_step"]]
              for m in record["metrics"]], "table", out, title="metrics")
    if record["artifacts"]:
        emit(["artifact", "kind", "bytes", "sha256", "path"],
             [[a["name"], a["kind"], a["bytes"], a["sha256"][:16], a["path"]] for a in record["artifacts"]],
             "table", out, title="artifacts")
    if record["provenance"]:
        out.print(styled("provenance", "bold"))
        out.print(yaml.safe_dump(record["provenance"], sort_keys=False).rstrip(), highlight=False)


@app.command()
@reported
def logs(
    run_key: RunArgument,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="keep printing what is appended while the run is pending or running")] = False,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """The log of one run across all its attempts (and its traceback if it failed)."""
    from ntklab.db.connection import reading
    from ntklab.reports.overview import resolve_run, run_record, run_status
    from ntklab.runner.runlog import follow as follow_log

    engine, store = existing_engine(db, home)
    with reading(engine) as conn:
        run_id = resolve_run(conn, run_key)
        record = run_record(conn, run_id)
    path = store.log_path(record["key"])
    if follow:
        def unfinished() -> bool:
            with reading(engine) as conn:
                return run_status(conn, run_id) in ("pending", "running")

        for chunk in follow_log(path, unfinished):
            out.file.write(chunk)
            out.file.flush()
        return
    if path.exists():
        out.file.write(path.read_text(encoding="utf-8"))
    elif record["traceback"]:
        out.file.write(record["traceback"])
    else:
        raise UsageError(f"run {record['key'][:12]} has no log in {store.root} (it may have run with another home)")
