"""`ntklab compare`: runs side by side (logic in ntklab/reports/compare.py)."""

from ntklab.cli.common import (DbOption, FormatOption, HomeOption, OutputFormat, RunsArgument, app, err,
                               existing_engine, out, reported)
from ntklab.errors import UsageError


@app.command()
@reported
def compare(
    run_keys: RunsArgument,
    format_: FormatOption = OutputFormat.table,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """The config keys on which two or more runs differ, and their metrics side by side with the
    differences from the first run."""
    from ntklab.db.connection import reading
    from ntklab.reports.compare import compare_runs
    from ntklab.reports.overview import resolve_run
    from ntklab.tabular import emit, write_json

    if len(run_keys) < 2:
        raise UsageError("compare needs at least two runs")
    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        ids = [resolve_run(conn, key) for key in run_keys]
        if len(set(ids)) < len(ids):
            raise UsageError("a run is named twice")
        found = compare_runs(conn, ids)
    if format_ == OutputFormat.json:
        write_json(found.as_json(), out)
        return
    labels = [r.key if format_ == OutputFormat.csv else r.key[:12] for r in found.runs]
    rows = [["run", "status"] + [r.status for r in found.runs] + [""] * (len(labels) - 1),
            ["run", "in"] + [", ".join(r.memberships) for r in found.runs] + [""] * (len(labels) - 1)]
    rows += [["config", key] + values + [""] * (len(labels) - 1) for key, values in found.config.items()]
    rows += [["metric", m.name] + m.last + m.differences for m in found.metrics]
    columns = ["section", "name", *labels, *(f"Δ {label}" for label in labels[1:])]
    emit(columns, rows, format_.value, out)
    if format_ == OutputFormat.table:
        err.print(f"{found.same_keys} config keys are the same in every run; metrics: the last value, Δ: minus the first run's", style="dim")
