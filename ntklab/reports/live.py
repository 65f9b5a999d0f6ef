"""What `ntklab watch` shows: the running runs and the most recently finished ones, with the
latest value of their headline metric and its series as a sparkline. Read from the database
alone, so it works from any machine that reaches it."""

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from ntklab.db.tables import RunStatus
from ntklab.db.tables import experiments, memberships, metrics, runs
from ntklab.headline import headline_names
from ntklab.reports.overview import experiment_figure_metrics, latest_values, running_runs

SPARK = "▁▂▃▄▅▆▇█"
FINISHED = (RunStatus.done, RunStatus.failed, RunStatus.diverged, RunStatus.interrupted)


@dataclass(frozen=True)
class LiveRun:
    key: str
    experiment: str
    group: str
    status: str
    step: int | None
    total: int | None
    eta_seconds: float | None
    finished_at: datetime | None
    metric: str | None
    value: float | None
    series: list[float | None]


def live_runs(conn: Connection, experiment: str | None, recent: int, points: int = 40) -> list[LiveRun]:
    """The running runs, then the `recent` last finished ones, newest first."""
    running = running_runs(conn, experiment)
    query = (select(runs.c.id, runs.c.key, runs.c.task, runs.c.status, runs.c.progress_step, runs.c.progress_total,
                    runs.c.finished_at, experiments.c.name, memberships.c.group_name)
             .select_from(memberships.join(experiments).join(runs, runs.c.id == memberships.c.run_id))
             .where(runs.c.status.in_(FINISHED), runs.c.finished_at.is_not(None))
             .order_by(runs.c.finished_at.desc(), runs.c.id.desc()).limit(recent))
    if experiment is not None:
        query = query.where(experiments.c.name == experiment)
    finished = conn.execute(query).all() if recent > 0 else []
    ids = {r.id for r in finished} | {r["id"] for r in running}
    last = latest_values(conn, ids)
    figures = experiment_figure_metrics(conn, {r.name for r in finished} | {r["experiment"] for r in running})
    chosen: dict[int, str] = {}
    for r in running:
        if r["metric"]:
            chosen[r["id"]] = r["metric"][0]
    for r in finished:
        names = headline_names(r.task, last.get(r.id, {}), figures.get(r.name, ()))
        if names:
            chosen[r.id] = names[0]
    series = _series(conn, chosen, points)
    shown = [LiveRun(r["key"], r["experiment"], r["group"], "running", r["step"], r["total"], r["eta_seconds"], None,
                     chosen.get(r["id"]), last.get(r["id"], {}).get(chosen.get(r["id"], "")),
                     series.get(r["id"], [])) for r in running]
    shown += [LiveRun(r.key, r.name, r.group_name, RunStatus(r.status).value, r.progress_step, r.progress_total, None,
                      r.finished_at, chosen.get(r.id), last.get(r.id, {}).get(chosen.get(r.id, "")),
                      series.get(r.id, [])) for r in finished]
    return shown


def _series(conn: Connection, chosen: dict[int, str], points: int) -> dict[int, list[float | None]]:
    """The last `points` values of each run's chosen series (one query for all of them)."""
    if not chosen:
        return {}
    found: dict[int, list[float | None]] = defaultdict(list)
    rows = conn.execute(select(metrics.c.run_id, metrics.c.name, metrics.c.value)
                        .where(metrics.c.run_id.in_(list(chosen)), metrics.c.name.in_(set(chosen.values())))
                        .order_by(metrics.c.run_id, metrics.c.step))
    for run_id, name, value in rows:
        if chosen[run_id] == name:
            found[run_id].append(value)
    return {k: v[-points:] for k, v in found.items()}


def sparkline(values: list[float | None], width: int = 20) -> str:
    """Values as bars from lowest to highest, averaged down to `width` buckets; NaN (None) as a space."""
    if not values:
        return ""
    count = min(width, len(values))
    buckets = [values[i * len(values) // count:(i + 1) * len(values) // count] for i in range(count)]
    means = [None if any(v is None for v in b) else sum(b) / len(b) for b in buckets]
    finite = [m for m in means if m is not None]
    if not finite:
        return " " * len(means)
    low, high = min(finite), max(finite)
    scale = (len(SPARK) - 1) / (high - low) if high > low else 0.0
    return "".join(" " if m is None else SPARK[round((m - low) * scale)] for m in means)
