"""Exports of an experiment's metrics: the long table (one row per run, series and step) as CSV or
Parquet for pandas and polars, and TensorBoard event files.

The long table's columns are the run key, its group, the params that vary across the
experiment's runs (dotted names), then metric name, step, value and wall time. A value that was
NaN or infinite is recorded as NULL and exported as missing (CSV: empty; TensorBoard: NaN).

TensorBoard: one run directory per (run, group), named `GROUP/KEY=VALUE,...` by the params that
vary, holding each metric series as a scalar tag with its steps and wall times, and the run's
params and headline metrics as TensorBoard hparams. Series are read in chunks of runs, never one
query per run.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from ntklab.db.tables import experiments, metrics, runs
from ntklab.errors import UsageError
from ntklab.headline import headline_names
from ntklab.reports.records import (
    chunks,
    differing_params,
    member_rows,
    run_params,
    summary_rows,
)

METRIC_COLUMNS = ["name", "step", "value", "wall_time"]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=,+-]+")


@dataclass(frozen=True)
class ExportedRun:
    id: int
    key: str
    group: str
    task: str
    params: dict[str, Any]  # the whole flattened config
    varying: dict[str, Any]  # the params that vary across the experiment


def experiment_runs(conn: Connection, experiment: str) -> tuple[list[ExportedRun], list[str]]:
    """The experiment's (run, group) memberships with their params, and the keys of the params that vary."""
    experiment_id = conn.execute(select(experiments.c.id).where(experiments.c.name == experiment)).scalar()
    if experiment_id is None:
        known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        raise UsageError(f"no experiment named {experiment!r}; known: {', '.join(known) or 'none yet'}")
    members = member_rows(conn, experiment_id, runs.c.key, runs.c.task)
    ids = sorted({m.id for m in members})
    params = run_params(conn, ids)
    varying = differing_params(conn, ids) if len(ids) > 1 else []
    found = [ExportedRun(m.id, m.key, m.group_name, m.task, params.get(m.id, {}),
                         {k: params.get(m.id, {}).get(k) for k in varying}) for m in members]
    return found, varying


def _series(conn: Connection, ids: list[int]) -> Iterator[tuple[int, str, int, float | None, float]]:
    for chunk in chunks(ids):
        yield from conn.execute(
            select(metrics.c.run_id, metrics.c.name, metrics.c.step, metrics.c.value, metrics.c.wall_time)
            .where(metrics.c.run_id.in_(list(chunk)))
            .order_by(metrics.c.run_id, metrics.c.name, metrics.c.step))


def long_table(conn: Connection, experiment: str) -> tuple[list[str], list[list[Any]]]:
    """The experiment's metrics as one long table: key, group, the varying params, name, step, value, wall_time."""
    found, varying = experiment_runs(conn, experiment)
    by_id: dict[int, list[ExportedRun]] = {}
    for run in found:
        by_id.setdefault(run.id, []).append(run)
    rows = [[run.key, run.group, *(run.varying[k] for k in varying), name, step, value, wall]
            for run_id, name, step, value, wall in _series(conn, sorted(by_id)) for run in by_id[run_id]]
    return ["key", "group", *varying, *METRIC_COLUMNS], rows


def write_parquet(columns: list[str], rows: list[list[Any]], path: Path) -> None:
    pyarrow, parquet = _pyarrow()
    values = {c: [_arrow_cell(row[i]) for row in rows] for i, c in enumerate(columns)}
    parquet.write_table(pyarrow.table(values), path)


def _arrow_cell(value: Any) -> Any:
    """Lists and mappings (a few params) as JSON text: a column holds one type."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise UsageError("Parquet export needs pyarrow: pip install 'ntklab[parquet]'") from None
    return pyarrow, pyarrow.parquet


def run_directory(run: ExportedRun, varying: list[str]) -> str:
    """`GROUP/KEY=VALUE,...` by the params that vary, else `GROUP/RUNKEY12`; safe as a path."""
    shown = ",".join(f"{k}={_text(run.varying[k])}" for k in varying)
    return f"{_UNSAFE.sub('_', run.group)}/{_UNSAFE.sub('_', shown) if shown else run.key[:12]}"


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else str(value)


def _hparam(value: Any) -> Any:
    return value if isinstance(value, (bool, int, float, str)) else _text(value)


def write_tensorboard(conn: Connection, experiment: str, directory: Path) -> list[tuple[str, int]]:
    """Write the experiment's runs as TensorBoard runs under `directory`; returns (run directory,
    points written) per run. A run directory that already holds event files is an error."""
    writer_class, hparams = _tensorboardx()
    found, varying = experiment_runs(conn, experiment)
    names: dict[str, int] = {}
    targets: dict[tuple[int, str], Path] = {}
    for run in found:
        name = run_directory(run, varying)
        names[name] = names.get(name, 0) + 1
        name = name if names[name] == 1 else f"{name},run={run.key[:12]}"
        path = directory / name
        if path.is_dir() and any(path.glob("events.out.tfevents.*")):
            raise UsageError(f"{path} already holds TensorBoard event files: export into a new directory")
        targets[(run.id, run.group)] = path
    last = summary_rows(conn, sorted({r.id for r in found}))
    recorded_by_run: dict[int, set[str]] = {}
    for run_id, name in last:
        recorded_by_run.setdefault(run_id, set()).add(name)
    writers = {}
    written: dict[tuple[int, str], int] = {}
    try:
        for run in found:
            writer = writers[(run.id, run.group)] = writer_class(logdir=str(targets[(run.id, run.group)]),
                                                                flush_secs=3600, max_queue=10_000)
            recorded = recorded_by_run.get(run.id, set())
            headline = {name: last[(run.id, name)].last
                        for name in headline_names(run.task, recorded) if last[(run.id, name)].last is not None}
            hparam_values = {"group": run.group, **{k: _hparam(v) for k, v in run.params.items() if v is not None}}
            for summary in hparams(hparam_values, headline):
                writer._get_file_writer().add_summary(summary)
            written[(run.id, run.group)] = 0
        groups_of: dict[int, list[str]] = {}
        for run in found:
            groups_of.setdefault(run.id, []).append(run.group)
        for run_id, name, step, value, wall in _series(conn, sorted(groups_of)):
            for group in groups_of[run_id]:
                writers[(run_id, group)].add_scalar(name, float("nan") if value is None else value,
                                                    global_step=step, walltime=wall)
                written[(run_id, group)] += 1
    finally:
        for writer in writers.values():
            writer.close()
    return [(str(targets[k].relative_to(directory)), n) for k, n in written.items()]


def _tensorboardx():
    try:
        from tensorboardX import SummaryWriter
        from tensorboardX.summary import hparams
    except ImportError:
        raise UsageError("TensorBoard export needs tensorboardX: pip install 'ntklab[tensorboard]'") from None
    return SummaryWriter, hparams
