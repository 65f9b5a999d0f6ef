"""`ntklab run` and `ntklab plan`: expand a spec into runs, show them, execute them."""

import json
from datetime import timedelta
from typing import Annotated

import typer

from ntklab.cli.common import (EXIT_FAILED_RUNS, SIGNAL_EXIT, DbOption, FormatOption, HomeOption, LeaseOption,
                               MaxRunsOption, OutputFormat, SetOption, SpecArgument, SpecGroupOption, app, err,
                               existing_engine, open_home_engine, out, reported, sqlite_file_missing, styled)
from ntklab.spec.limits import MAX_RUNS
from ntklab.cli.executors import (AccountOption, AllowSqliteOption, CpusOption, DevicesOption, ExecutorOption,
                                  GpusOption, MemOption, PartitionOption, QosOption, SetupOption, TimeOption,
                                  WaitOption, WorkersOption, executor_config, hand_off)


@app.command()
@reported
def run(
    spec: SpecArgument,
    set_: SetOption = None,
    db: DbOption = None,
    home: HomeOption = None,
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="run failed and diverged runs again")] = False,
    force: Annotated[bool, typer.Option("--force", help="run every run again from scratch, done ones too")] = False,
    lease_seconds: LeaseOption = 60.0,
    group: SpecGroupOption = None,
    format_: Annotated[OutputFormat, typer.Option("--format", "-f", help="format of the summary at the end")] = OutputFormat.table,
    max_runs: MaxRunsOption = MAX_RUNS,
    strict: Annotated[bool, typer.Option(
        "--strict", help="exit 1 when a run of the spec diverged, too (by default only failed runs do): for scripts")
    ] = False,
    executor: ExecutorOption = None,
    workers: WorkersOption = None,
    devices: DevicesOption = None,
    partition: PartitionOption = None,
    account: AccountOption = None,
    qos: QosOption = None,
    time_minutes: TimeOption = None,
    cpus_per_task: CpusOption = None,
    mem_gb: MemOption = None,
    gpus_per_task: GpusOption = None,
    setup: SetupOption = None,
    allow_sqlite: AllowSqliteOption = False,
    wait: WaitOption = False,
) -> None:
    """Expand SPEC into runs and execute those not done yet; interrupted runs resume.

    Without an executor this process is the one worker; `--executor local --workers N` starts N
    worker processes here, `--executor slurm --workers N` submits a job array of N workers."""
    from ntklab.db.tables import RunStatus
    from ntklab.runner.execute import ExecuteOptions
    from ntklab.runner.plan import plan_groups
    from ntklab.runner.progress import make_reporter
    from ntklab.runner.worker import execute
    from ntklab.spec.load import check_inputs, load_spec, select_groups
    from ntklab.tasks import registry

    plan = select_groups(load_spec(spec, set_ or [], tasks=registry, max_runs=max_runs), group or [])
    check_inputs(plan, registry)
    chosen = executor_config(plan.executor, executor, workers, devices, {
        "partition": partition, "account": account, "qos": qos, "time_minutes": time_minutes,
        "cpus_per_task": cpus_per_task, "mem_gb": mem_gb, "gpus_per_task": gpus_per_task, "setup": setup})
    options = ExecuteOptions(retry_failed=retry_failed, force=force, lease=timedelta(seconds=lease_seconds))
    if chosen is not None:
        engine, result = hand_off(plan, chosen, options, db, home, allow_sqlite=allow_sqlite, wait=wait)
        if result is None:
            return
    else:
        from ntklab.runner.compilation_cache import enable_compilation_cache

        engine, store = open_home_engine(db, home, create=True)
        enable_compilation_cache(store)
        _warn_of_a_new_spec_version(engine, plan)
        result = execute(engine, store, plan, options, make_reporter(err))
    _print_plan(plan, plan_groups(engine, plan), f"{plan.name}: runs by status", format_,
                headlines=_headline_rows(engine, plan))
    failures = [o for o in result.outcomes if o.status in ("failed", "diverged", "lost")]
    for outcome in failures:
        err.print(styled(outcome.status, "red", f"{outcome.key[:12]} ({outcome.group}): {outcome.note}"),
                  highlight=False)
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
    diverged = result.count(RunStatus.diverged)
    if strict and diverged:
        err.print(f"{diverged} runs diverged (--strict)")
        raise typer.Exit(EXIT_FAILED_RUNS)


def _warn_of_a_new_spec_version(engine, plan) -> None:
    """Another spec file (or an edited one) with the name of a recorded experiment adds a version
    to it; say so, since the two specs' runs and figures now live under one name."""
    from ntklab.db.connection import reading
    from ntklab.db.queue import spec_version_count

    with reading(engine) as conn:
        versions, known = spec_version_count(conn, plan.name, plan.spec_hash)
    if versions and not known:
        err.print(styled("warning", "yellow", f"{plan.file} adds spec version {versions + 1} to the experiment "
                         f"{plan.name!r}; the figures of earlier versions stay queryable"), highlight=False)


_GROUP_COLUMNS = ["group", "task"]


def _group_rows(groups) -> tuple[list[str], list[list]]:
    from ntklab.runner.plan import COLUMNS

    rows = [[g.group, g.task] + [g.counts.get(c, 0) for c in COLUMNS] + [g.total] for g in groups]
    return [*_GROUP_COLUMNS, *COLUMNS, "total"], rows


def _headline_rows(engine, plan) -> tuple[list[str], list[list]]:
    """Per group of the plan: its headline metrics' best run and mean over its done runs."""
    from ntklab.db.connection import reading
    from ntklab.reports.overview import group_headlines

    figure_metrics = [y for figure in plan.figures.values() for y in figure.y_names]
    with reading(engine) as conn:
        found = group_headlines(conn, plan.name, {r.group for r in plan.runs}, figure_metrics)
    return (["group", "metric", "n", "best", "best_run", "mean", "std"],
            [[h.group, h.metric, h.n, h.best, h.best_run, h.mean, h.std] for h in found])


def _print_plan(plan, groups, title: str, format_: OutputFormat, runs: tuple[list[str], list[list]] | None = None,
                headlines: tuple[list[str], list[list]] | None = None) -> None:
    """The table of runs by status per group (and, given, the listing of runs and the headline
    metrics per group), in `format_`."""
    from ntklab.runner.plan import COLUMNS
    from ntklab.tabular import emit, records, write_json

    columns, rows = _group_rows(groups)
    if format_ == OutputFormat.json:
        document = {"experiment": plan.name, "groups": records(columns, rows)}
        if runs is not None:
            document["runs"] = records(*runs)
        if headlines is not None:
            document["headlines"] = records(*headlines)
        write_json(document, out)
        return
    if format_ == OutputFormat.csv:
        emit(*(runs or (columns, rows)), "csv", out)
        return
    totals = ["all", ""] + [sum(g.counts.get(c, 0) for g in groups) for c in COLUMNS] + [sum(g.total for g in groups)]
    emit(columns, rows + [totals], "table", out, title=title)
    if runs is not None:
        emit(*runs, "table", out)
    if headlines is not None and headlines[1]:
        head_columns, head_rows = headlines
        shown = [[v[:12] if c == "best_run" and v else v for c, v in zip(head_columns, row)] for row in head_rows]
        emit(head_columns, shown, "table", out, title="headline metrics: best run and mean over done runs")


@app.command()
@reported
def plan(
    spec: SpecArgument,
    set_: SetOption = None,
    db: DbOption = None,
    home: HomeOption = None,
    show: Annotated[bool, typer.Option("--show", help="list every run with the params that vary")] = False,
    group: SpecGroupOption = None,
    format_: FormatOption = OutputFormat.table,
    max_runs: MaxRunsOption = MAX_RUNS,
) -> None:
    """Show the runs SPEC expands into and which of them are new, done, failed or running.

    With --format csv: the groups, or with --show the runs; with --format json: both in one document."""
    from ntklab.runner.plan import existing_statuses, plan_groups
    from ntklab.flatten import flatten
    from ntklab.spec.load import load_spec, select_groups
    from ntklab.tasks import registry

    loaded = select_groups(load_spec(spec, set_ or [], tasks=registry, max_runs=max_runs), group or [])
    engine = None if sqlite_file_missing(db, home) else existing_engine(db, home)[0]
    listing = None
    if show:
        known = existing_statuses(engine, loaded)
        flat = [flatten(r.config_json) for r in loaded.runs]
        varying = sorted({k for f in flat for k in f if len({json.dumps(g.get(k)) for g in flat}) > 1})
        rows = [[r.key if format_ != OutputFormat.table else r.key[:12], r.group, known.get(r.key, "new")]
                + [f.get(k) for k in varying] for r, f in zip(loaded.runs, flat)]
        listing = (["key", "group", "status", *varying], rows)
    _print_plan(loaded, plan_groups(engine, loaded), f"{loaded.name}: {len(loaded.runs)} runs", format_, listing)
    if loaded.duplicates:
        err.print(f"{loaded.duplicates} sweep points repeat a config of their group and are counted once")
