"""`ntklab worker`: claim runs from the database's queue and execute them until none is left."""

from datetime import datetime, time, timedelta, timezone
from typing import Annotated, Optional

import typer

from ntklab.cli.common import (EXIT_FAILED_RUNS, SIGNAL_EXIT, DbOption, HomeOption, LeaseOption, app, err,
                               finite_between, open_home_engine, reported)
from ntklab.errors import UsageError


def parse_until(text: str | None, now: datetime | None = None) -> datetime | None:
    """`--until`: an ISO date and time, or a time of day (the next one), in local time unless an
    offset is given; returned as naive UTC like every time in the database."""
    if text is None:
        return None
    now = now or datetime.now().astimezone()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        try:
            of_day = time.fromisoformat(text)
        except ValueError:
            raise UsageError(f"--until {text!r}: expected a time (21:30) or a date and time "
                             "(2026-12-24T08:00, optionally with an offset)") from None
        moment = datetime.combine(now.date(), of_day, tzinfo=of_day.tzinfo or now.tzinfo)
        if moment <= now:
            moment += timedelta(days=1)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.astimezone(timezone.utc).replace(tzinfo=None)


@app.command()
@reported
def worker(
    experiments: Annotated[Optional[list[str]], typer.Argument(help="claim only runs of these experiments (default: all)")] = None,
    db: DbOption = None,
    home: HomeOption = None,
    max_runs: Annotated[Optional[int], typer.Option("--max-runs", min=1, help="exit after executing this many runs")] = None,
    idle_exit: Annotated[Optional[float], typer.Option(
        "--idle-exit", metavar="SECONDS", callback=finite_between(0.0, 365 * 86400.0, " of seconds"),
        help="exit after this long without a run to claim (default: stay while other workers hold runs)")] = None,
    until: Annotated[Optional[str], typer.Option(
        "--until", metavar="TIME", help="claim no run after this time (21:30, or 2026-12-24T08:00)")] = None,
    lease_seconds: LeaseOption = 60.0,
) -> None:
    """Claim runs from the queue and execute them, until none is left or a limit is reached.

    Start as many as you like, on any machine that reaches the database: every run is executed by
    one worker at a time, and a dead worker's run is reclaimed by another when its lease expires."""
    from ntklab.runner.execute import ExecuteOptions
    from ntklab.runner.compilation_cache import enable_compilation_cache
    from ntklab.runner.local import apply_cpu_set
    from ntklab.runner.progress import make_reporter
    from ntklab.runner.worker import Scope, WorkerLimits, known_experiments, work

    apply_cpu_set()
    limits = WorkerLimits(max_runs=max_runs, idle_exit=idle_exit, until=parse_until(until), wait_for_held=True)
    engine, store = open_home_engine(db, home, create=True)
    enable_compilation_cache(store)
    missing = sorted(set(experiments or ()) - set(known_experiments(engine)))
    if missing:
        known = ", ".join(known_experiments(engine)) or "none yet"
        raise UsageError(f"no experiment {', '.join(map(repr, missing))} in the database (experiments: {known}); "
                         "`ntklab run SPEC` records one")
    result = work(engine, store, Scope(experiments=experiments), ExecuteOptions(lease=timedelta(seconds=lease_seconds)),
                  make_reporter(err), limits)
    ended = f"stopped by {result.stopped_by}" if result.stopped_by else (result.limit or "no run left to claim")
    err.print(f"worker: executed {len(result.outcomes)} runs; {ended}", highlight=False)
    if result.stopped_by:
        raise typer.Exit(SIGNAL_EXIT.get(result.stopped_by, EXIT_FAILED_RUNS))
    if any(o.status in ("failed", "diverged") for o in result.outcomes):
        raise typer.Exit(EXIT_FAILED_RUNS)

