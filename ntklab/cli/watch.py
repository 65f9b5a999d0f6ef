"""`ntklab watch`: a live view of running and recently finished runs (data from ntklab/reports/live.py)."""

import time
from typing import Annotated

import typer

from ntklab.cli.common import (DbOption, HomeOption, OptionalExperimentArgument, app, existing_engine,
                               experiment_name, finite_between, out, reported)


@app.command()
@reported
def watch(
    experiment: OptionalExperimentArgument = None,
    interval: Annotated[float, typer.Option("--interval", "-i", metavar="SECONDS",
                                            callback=finite_between(0.1, 86400.0, " of seconds"),
                                            help="seconds between refreshes")] = 2.0,
    recent: Annotated[int, typer.Option("--recent", "-n", metavar="N", min=0,
                                        help="how many finished runs to show")] = 10,
    once: Annotated[bool, typer.Option("--once", help="print the view once and exit")] = False,
    db: DbOption = None,
    home: HomeOption = None,
) -> None:
    """Running and recently finished runs with their latest headline metric and its sparkline,
    refreshed from the database (from any machine that reaches it). Ctrl-C stops."""
    from rich.live import Live

    from ntklab.db.connection import reading
    from ntklab.reports.live import live_runs
    from ntklab.reports.overview import ensure_experiment

    name = experiment_name(experiment) if experiment else None
    engine, _ = existing_engine(db, home)
    if name is not None:
        with reading(engine) as conn:
            ensure_experiment(conn, name)

    def view():
        with reading(engine) as conn:
            return _table(live_runs(conn, name, recent), name)

    if once:
        out.print(view())
        return
    with Live(view(), console=out, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            live.update(view(), refresh=True)


def _table(shown, experiment: str | None):
    from datetime import datetime, timezone

    from rich.table import Table
    from rich.text import Text

    from ntklab.reports.live import sparkline
    from ntklab.tabular import cell_text, duration_text

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    title = f"ntklab watch {experiment or '(all experiments)'}  {now:%H:%M:%S} UTC"
    table = Table(title=title, header_style="bold")
    for column in ("run", "experiment/group", "status", "step", "ETA / finished", "metric", "latest", "curve"):
        table.add_column(column, overflow="fold")
    style = {"running": "cyan", "done": "green", "failed": "red", "diverged": "red", "interrupted": "yellow"}
    for r in shown:
        step = f"{r.step}/{r.total}" if r.total else "-"
        when = (f"ETA {duration_text(r.eta_seconds)}" if r.status == "running"
                else f"{duration_text((now - r.finished_at).total_seconds())} ago")
        table.add_row(Text(r.key[:12]), Text(f"{r.experiment}/{r.group}"), Text(r.status, style=style.get(r.status, "")),
                      Text(step), Text(when), Text(r.metric or "-"), Text(cell_text(r.value)), Text(sparkline(r.series)))
    if not shown:
        table.caption = "no running or finished runs yet"
    return table
