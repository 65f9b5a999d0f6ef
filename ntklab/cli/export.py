"""`ntklab export tensorboard|parquet|csv`: an experiment's metrics for other tools (logic in
ntklab/reports/export.py)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from ntklab.cli.common import (CONTEXT, EXIT_EPILOG, DbOption, ExperimentArgument, HomeOption, app, err, existing_engine,
                               experiment_name, out, reported)

export_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, epilog=EXIT_EPILOG,
                         help="An experiment's metrics as TensorBoard event files, Parquet or CSV.")
app.add_typer(export_app, name="export")
OutputOption = Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE", help="the file to write")]


@export_app.command("tensorboard")
@reported
def export_tensorboard(
    experiment: ExperimentArgument,
    directory: Annotated[Path, typer.Argument(metavar="DIR", help="TensorBoard log directory (tensorboard --logdir DIR)")],
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Each run's metric series as TensorBoard event files, one run directory per run named by its
    group and the params that vary, with its params and headline metrics as hparams."""
    from ntklab.db.connection import reading
    from ntklab.reports.export import write_tensorboard

    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        written = write_tensorboard(conn, experiment_name(experiment), directory)
    out.print(f"wrote {len(written)} runs, {sum(n for _, n in written)} points to {directory}: "
              f"tensorboard --logdir {directory}", highlight=False)


@export_app.command("parquet")
@reported
def export_parquet(experiment: ExperimentArgument, output: OutputOption = None, db: DbOption = None,
                   home: HomeOption = None) -> None:
    """The long metrics table (key, group, varying params, name, step, value, wall_time) as Parquet."""
    from ntklab.db.connection import reading
    from ntklab.reports.export import long_table, write_parquet

    name = experiment_name(experiment)
    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        columns, rows = long_table(conn, name)
    path = output or Path(f"{name}-metrics.parquet")
    write_parquet(columns, rows, path)
    out.print(f"wrote {len(rows)} rows to {path}", highlight=False)


@export_app.command("csv")
@reported
def export_csv(experiment: ExperimentArgument,
               output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="FILE",
                                                              help="the file to write (default: stdout)")] = None,
               db: DbOption = None, home: HomeOption = None) -> None:
    """The long metrics table (key, group, varying params, name, step, value, wall_time) as CSV."""
    import csv
    import sys

    from ntklab.db.connection import reading
    from ntklab.reports.export import long_table

    engine, _ = existing_engine(db, home)
    with reading(engine) as conn:
        columns, rows = long_table(conn, experiment_name(experiment))
    with (open(output, "w", newline="", encoding="utf-8") if output else sys.stdout) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    if output:
        err.print(f"wrote {len(rows)} rows to {output}", highlight=False)
