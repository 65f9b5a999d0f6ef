"""The `ntklab` command line: parse, call the layers below, print. Nothing else lives here."""

import functools
import json
import sys
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from ntklab.errors import DatabaseError, SpecError, UsageError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Declarative experiments on neural tangent kernels, recorded in a database.")
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

EXIT_FAILED_RUNS = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


DbOption = Annotated[Optional[str], typer.Option("--db", help="database URL (default: NTKLAB_DB, else SQLite in the home)")]
HomeOption = Annotated[Optional[Path], typer.Option("--home", help="home directory (default: NTKLAB_HOME, else ./.ntklab)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a config key: KEY=VALUE (repeatable)")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")]
SpecGroupOption = Annotated[Optional[list[str]], typer.Option(
    "--group", "-g", help="only this group of the spec, with the upstream runs it needs (repeatable)")]


def reported(command):
    """Turn the errors users can cause into a clear message and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from ntklab.db.connection import redact

        try:
            return command(*args, **kwargs)
        except SpecError as error:
            for problem in error.problems:
                err.print(f"[red]error[/red] {problem}", highlight=False, markup=True, soft_wrap=True)
            err.print("nothing was run and the database was not changed", style="dim")
            raise typer.Exit(EXIT_USAGE) from None
        except UsageError as error:
            err.print(f"[red]error[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except DatabaseError as error:
            err.print(f"[red]database error[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except SQLAlchemyError as error:
            url = getattr(error, "url", None)
            detail = str(getattr(error, "orig", None) or error).splitlines()[0]
            err.print(f"[red]database error[/red] {detail}" + (f" ({redact(url)})" if url else ""), highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None

    return wrapper


def _engine(db: str | None, home_dir: Path | None, *, create: bool):
    from ntklab.db.connection import open_engine, resolve_url
    from ntklab.db.schema import ensure_schema
    from ntklab.store import Home, resolve_home

    home = Home(resolve_home(home_dir))
    engine = open_engine(resolve_url(db, home.root))
    if create:
        ensure_schema(engine)
    return engine, home


def _sqlite_file_missing(db: str | None, home_dir: Path | None) -> str | None:
    """The path of the SQLite file the command would use, if that file does not exist yet."""
    from ntklab.db.connection import resolve_url
    from ntklab.store import resolve_home

    url = resolve_url(db, resolve_home(home_dir))
    path = url.removeprefix("sqlite:///")
    return path if url.startswith("sqlite:///") and not Path(path).exists() else None


def _existing_engine(db: str | None, home_dir: Path | None):
    """For read-only commands: an engine on a database that must already hold results."""
    missing = _sqlite_file_missing(db, home_dir)
    if missing:
        raise DatabaseError(f"no database at {missing}: run a spec first, or pass --db/--home")
    return _engine(db, home_dir, create=True)


@app.command()
@reported
def run(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")],
    set_: SetOption = None,
    db: DbOption = None,
    home: HomeOption = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed and diverged runs again")] = False,
    force: Annotated[bool, typer.Option("--force", help="run every run again from scratch, done ones too")] = False,
    lease_seconds: Annotated[float, typer.Option(help="a run whose worker is silent this long is reclaimed")] = 60.0,
    group: SpecGroupOption = None,
) -> None:
    """Expand SPEC into runs and execute those not done yet; interrupted runs resume."""
    from ntklab.db.models import RunStatus
    from ntklab.runner.execute import ExecuteOptions, execute
    from ntklab.runner.plan import plan_groups
    from ntklab.runner.progress import make_reporter
    from ntklab.spec.load import check_inputs, load_spec, select_groups

    plan = select_groups(load_spec(spec, set_ or []), group or [])
    check_inputs(plan)
    engine, store = _engine(db, home, create=True)
    options = ExecuteOptions(retry_failed=retry_failed, force=force, lease=timedelta(seconds=lease_seconds))
    result = execute(engine, store, plan, options, make_reporter(err))
    _print_plan(plan, plan_groups(engine, plan), title=f"{plan.name}: runs by status")
    failures = [o for o in result.outcomes if o.status in ("failed", "diverged", "lost")]
    for outcome in failures:
        err.print(f"[red]{outcome.status}[/red] {outcome.key[:12]} ({outcome.group}): {outcome.note}", highlight=False)
    if result.count(RunStatus.running):
        err.print(f"{result.count(RunStatus.running)} runs are held by other workers", style="dim")
    if result.stopped_by:
        err.print(f"stopped by {result.stopped_by}; run the same command again to resume")
        raise typer.Exit(SIGNAL_EXIT.get(result.stopped_by, EXIT_FAILED_RUNS))
    failed = result.count(RunStatus.failed)
    if failed:
        earlier = failed - sum(o.status == "failed" for o in result.outcomes)
        if earlier:
            err.print(f"{earlier} runs failed earlier or are blocked by a failed upstream run; "
                      "--retry-failed runs them again")
        raise typer.Exit(EXIT_FAILED_RUNS)


def _print_plan(plan, groups, title: str) -> None:
    from ntklab.runner.plan import COLUMNS
    from ntklab.tabular import emit

    rows = [[g.group, g.task] + [g.counts.get(c, 0) for c in COLUMNS] + [g.total] for g in groups]
    totals = ["all", ""] + [sum(g.counts.get(c, 0) for g in groups) for c in COLUMNS] + [sum(g.total for g in groups)]
    emit(["group", "task", *COLUMNS, "total"], rows + [totals], "table", out, title=title)


@app.command()
@reported
def plan(
    spec: Annotated[Path, typer.Argument(help="experiment spec (YAML)")],
    set_: SetOption = None,
    db: DbOption = None,
    home: HomeOption = None,
    show: Annotated[bool, typer.Option("--show", help="list every run with the params that vary")] = False,
    group: SpecGroupOption = None,
) -> None:
    """Show the runs SPEC expands into and which of them are new, done, failed or running."""
    from ntklab.runner.plan import existing_statuses, plan_groups
    from ntklab.spec.flatten import flatten
    from ntklab.spec.load import load_spec, select_groups
    from ntklab.tabular import emit

    loaded = select_groups(load_spec(spec, set_ or []), group or [])
    engine = None if _sqlite_file_missing(db, home) else _engine(db, home, create=False)[0]
    _print_plan(loaded, plan_groups(engine, loaded), title=f"{loaded.name}: {len(loaded.runs)} runs")
    if loaded.duplicates:
        err.print(f"{loaded.duplicates} sweep points repeat a config of their group and are counted once")
    if show:
        known = existing_statuses(engine, loaded)
        flat = [flatten(r.config_json) for r in loaded.runs]
        varying = sorted({k for f in flat for k in f if len({json.dumps(g.get(k)) for g in flat}) > 1})
        rows = [[r.key[:12], r.group, known.get(r.key, "new")] + [f.get(k) for k in varying]
                for r, f in zip(loaded.runs, flat)]
        emit(["key", "group", "status", *varying], rows, "table", out)


@app.command()
@reported
def status(
    experiment: Annotated[Optional[str], typer.Argument(help="experiment name (default: all)")] = None,
    db: DbOption = None,
    home: HomeOption = None,
    format_: FormatOption = OutputFormat.table,
) -> None:
    """Counts of runs by status per experiment and group, and the progress of running runs."""
    from ntklab.db.connection import reading
    from ntklab.db.models import RunStatus
    from ntklab.db.queue import reap
    from ntklab.reports.overview import experiment_status
    from ntklab.tabular import emit

    engine, _ = _existing_engine(db, home)
    reap(engine)
    with reading(engine) as conn:
        groups = experiment_status(conn, experiment)
    names = [s.value for s in RunStatus]
    rows = [[g.experiment, g.group] + [g.counts.get(n, 0) for n in names] + [sum(g.counts.values())] for g in groups]
    emit(["experiment", "group", *names, "total"], rows, format_.value, out)
    if format_ == OutputFormat.table:
        for g in groups:
            for r in g.running:
                step = f"step {r['step']}/{r['total']}" if r["total"] else "starting"
                out.print(f"running {r['key'][:12]} ({g.experiment}/{g.group}): {step} on {r['worker']}", highlight=False)


@app.command()
@reported
def query(
    figure: Annotated[Optional[str], typer.Argument(metavar="FIGURE", help="with --paper: a figure, as NAME or EXPERIMENT:NAME")] = None,
    paper: Annotated[bool, typer.Option("--paper", help="print the data of a figure declared in a spec (without FIGURE: list the figures)")] = False,
    experiment: Annotated[Optional[str], typer.Option("--experiment", "-e", help="experiment name")] = None,
    group: Annotated[Optional[list[str]], typer.Option("--group", "-g", help="group name (repeatable)")] = None,
    status_: Annotated[Optional[list[str]], typer.Option("--status", "-s", help="run status (repeatable)")] = None,
    where: Annotated[Optional[str], typer.Option("--where", "-w", help="filter, e.g. \"model.arch == 'mlp' and test_accuracy > 0.9\"")] = None,
    columns: Annotated[Optional[str], typer.Option("--columns", "-c", help="comma-separated columns")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="at most this many runs")] = None,
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

    if paper or figure is not None:
        _query_paper(figure, paper, experiment, format_, db, home,
                     others=bool(group or status_ or where or columns or limit is not None))
        return
    engine, _ = _existing_engine(db, home)
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
    from ntklab.reports.figures import figure_data, missing_text, resolve_figure, stored_figures
    from ntklab.tabular import emit

    if not paper:
        raise UsageError(f"a figure name goes with --paper: ntklab query --paper {figure}")
    if others:
        raise UsageError("--paper prints a figure as its spec declares it; --group, --status, --where, --columns "
                         "and --limit do not apply (put a filter in the figure's `where:`)")
    if figure is not None and experiment is not None and ":" not in figure:
        figure = f"{experiment}:{figure}"
    engine, _ = _existing_engine(db, home)
    with reading(engine) as conn:
        if figure is None:
            stored = stored_figures(conn, experiment)
            listing = [[f.experiment, f.name, f.figure.kind, f.figure.x, ", ".join(f.figure.y_names),
                        f.figure.series, f.figure.facet, f.figure.step, f.figure.title] for f in stored.figures]
            for qualified, problem in stored.problems.items():
                err.print(f"[yellow]invalid[/yellow] {qualified}: {problem}", highlight=False)
            if not listing and format_ == OutputFormat.table:
                err.print("no figures in the database: declare them under `figures:` in a spec and run it")
                return
            emit(["experiment", "figure", "kind", "x", "y", "series", "facet", "step", "title"], listing,
                 format_.value, out)
            return
        data = figure_data(conn, resolve_figure(conn, figure))
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
            err.print(f"  {m.key[:12]} ({m.group}) {m.reason}{detail}", highlight=False, markup=False)
        if len(data.missing) > 20:
            err.print(f"  ... and {len(data.missing) - 20} more", highlight=False)


@app.command()
@reported
def report(
    target: Annotated[str, typer.Argument(metavar="SPEC_OR_EXPERIMENT", help="a spec file, or the name of an experiment in the database")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="the HTML file (default: ./EXPERIMENT-report.html)")] = None,
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

        plan = load_spec(spec_path)
        name, figures, spec_text, spec_file = plan.name, plan.figures, plan.text, str(spec_path)
    elif target.endswith((".yaml", ".yml")) or "/" in target:
        raise UsageError(f"no spec file {target!r} (give a spec file or the name of an experiment)")
    else:
        name = target
    engine, _ = _existing_engine(db, home)
    problems: list[str] = []
    with reading(engine) as conn:
        page = render_report(conn, name, figures=figures, spec_text=spec_text, spec_file=spec_file, problems=problems)
    for problem in problems:
        err.print(f"[yellow]warning[/yellow] {problem}", highlight=False)
    path = output or Path(f"{name}-report.html")
    atomic_write(path.absolute(), page.encode("utf-8"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # a report is for reading: not the 0600 of a temporary file
    out.print(f"wrote {path} ({len(page.encode('utf-8')) / 1e6:.1f} MB)", highlight=False)


@app.command()
@reported
def show(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="run key or a unique prefix of it")],
    format_: FormatOption = OutputFormat.table,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Everything recorded about one run: config, status, error, provenance, metrics, artifacts."""
    from ntklab.db.connection import reading
    from ntklab.reports.overview import resolve_run, run_record
    from ntklab.tabular import emit

    engine, _ = _existing_engine(db, home)
    with reading(engine) as conn:
        record = run_record(conn, resolve_run(conn, run_key))
    if format_ != OutputFormat.table:
        emit(list(record), [list(record.values())], format_.value, out)
        return
    where = ", ".join(f"{m['experiment']}/{m['group']}" for m in record["memberships"])
    out.print(f"[bold]run {record['key']}[/bold]  {where}  task {record['task']}")
    out.print(f"status {record['status']}  attempts {record['attempts']}  started {record['started_at']}  "
              f"finished {record['finished_at']}  checkpoint step {record['checkpoint_step']}", highlight=False)
    if record["error_type"]:
        out.print(f"[red]{record['error_type']}[/red]: {record['error_message']}", highlight=False)
        if record["traceback"]:
            out.print(record["traceback"], highlight=False, markup=False)
    out.print("[bold]config[/bold]")
    out.print(yaml.safe_dump(record["config"], sort_keys=False).rstrip(), highlight=False, markup=False)
    if record["metrics"]:
        emit(["metric", "last", "last_step", "min", "min_step", "max", "max_step"],
             [[m["name"], m["last"], m["last_step"], m["min"], m["min_step"], m["max"], m["max_step"]]
              for m in record["metrics"]], "table", out, title="metrics")
    if record["artifacts"]:
        emit(["artifact", "kind", "bytes", "sha256", "path"],
             [[a["name"], a["kind"], a["bytes"], a["sha256"][:16], a["path"]] for a in record["artifacts"]],
             "table", out, title="artifacts")
    if record["provenance"]:
        out.print("[bold]provenance[/bold]")
        out.print(yaml.safe_dump(record["provenance"], sort_keys=False).rstrip(), highlight=False, markup=False)


@app.command()
@reported
def logs(
    run_key: Annotated[str, typer.Argument(metavar="RUN", help="run key or a unique prefix of it")],
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """The log of one run across all its attempts (and its traceback if it failed)."""
    from ntklab.db.connection import reading
    from ntklab.reports.overview import resolve_run, run_record

    engine, store = _existing_engine(db, home)
    with reading(engine) as conn:
        record = run_record(conn, resolve_run(conn, run_key))
    path = store.log_path(record["key"])
    if path.exists():
        sys.stdout.write(path.read_text(encoding="utf-8"))
    elif record["traceback"]:
        sys.stdout.write(record["traceback"])
    else:
        raise UsageError(f"run {record['key'][:12]} has no log in {store.root} (it may have run with another home)")


@db_app.command("upgrade")
@reported
def db_upgrade(db: DbOption = None, home: HomeOption = None) -> None:
    """Create or migrate the database schema to this version of ntklab."""
    from ntklab.db.connection import redact
    from ntklab.db.schema import upgrade

    engine, _ = _engine(db, home, create=False)
    before, after = upgrade(engine)
    out.print(f"{redact(engine.url.render_as_string(hide_password=False))}: schema "
              + (f"already at {after}" if before == after else f"{before or 'empty'} -> {after}"), highlight=False)


# ---- data: the official dataset files (logic in ntklab/data/fetch.py) -------------------------

data_app = typer.Typer(no_args_is_help=True, help="Dataset files: download the official files and verify them.")
app.add_typer(data_app, name="data")
DataRootOption = Annotated[Optional[Path], typer.Option("--root", help="data root (default: NTKLAB_DATA, else ~/.ntklab-data)")]


@data_app.command("fetch")
@reported
def data_fetch(
    names: Annotated[list[str], typer.Argument(metavar="NAME...", help="mnist, fashion_mnist, kmnist, cifar10, cifar100, svhn")],
    root: DataRootOption = None,
    mirror: Annotated[Optional[str], typer.Option("--mirror", help="base URL laid out as <mirror>/<dataset>/<file> (default: NTKLAB_DATA_MIRROR, else the official sites)")] = None,
    retries: Annotated[int, typer.Option(help="attempts per location after a dropped connection (each resumes)")] = 3,
) -> None:
    """Download datasets from their official sites, resumably, each file verified by its official checksum.

    Files already present and valid are kept; an interrupted download resumes where it stopped."""
    from ntklab.data.fetch import RichProgress, fetch

    for name in names:
        results = fetch(name, root, mirror=mirror, retries=retries, progress=RichProgress(err))
        counts = {a: sum(r.action == a for r in results) for a in ("downloaded", "resumed", "present")}
        where = results[0].path.parent if results else root
        out.print(f"{name}: {len(results)} files verified in {where} ("
                  + ", ".join(f"{n} {a}" for a, n in counts.items() if n) + ")", highlight=False)


@data_app.command("list")
@reported
def data_list(root: DataRootOption = None, format_: FormatOption = OutputFormat.table) -> None:
    """Which datasets are present and valid under the data root (every file is checksummed)."""
    from ntklab.data.fetch import list_datasets
    from ntklab.tabular import emit

    rows = list_datasets(root)
    emit(["dataset", "state", "form", "directory"], [[r.name, r.state, r.forms, str(r.directory)] for r in rows],
         format_.value, out)
    if format_ == OutputFormat.table:
        for row in rows:
            if row.state in ("corrupt", "incomplete"):
                for problem in row.problems:
                    err.print(f"[yellow]{row.name}[/yellow] {problem}", highlight=False)


def main() -> None:
    app()
