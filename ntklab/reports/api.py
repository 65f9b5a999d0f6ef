"""The notebook API: an experiment's runs, params and metrics as plain records, and as pandas
DataFrames when pandas is installed (it is not a dependency of ntklab).

    from ntklab.reports.api import load_experiment, load_figure
    exp = load_experiment("quickstart", home="~/work/.ntklab")     # or db="postgresql://..."
    exp.runs[0]          # {"key": ..., "group": "mlp", "status": "done", "duration_s": 12.3, ...}
    exp.params[0]        # {"key": ..., "seed": 0, "train.optimizer.lr": 0.5, ...}
    exp.summaries[0]     # {"key": ..., "name": "test_accuracy", "last": 0.97, "last_step": 440, "min": ..., ...}
    exp.metrics          # every point of every series: {"key", "name", "step", "value", "wall_time"}
    exp.series(["test_accuracy"])                  # only some series (loaded on demand)
    exp.to_pandas()      # one row per run: attributes, params and the last value of each metric
    exp.frames()         # {"runs", "params", "summaries", "metrics"} as DataFrames
    load_figure("quickstart:fig1").records          # the table of `ntklab query --paper`
    load_artifact("3ae0", "kernel")                 # a run's artifact by (a prefix of) its key: a
                                                    # KernelStore, a numpy array (npy) or bytes

Records are plain dicts of JSON-like values (timestamps as datetime); a run's `key` links them.
Data is read once when the experiment is loaded (runs, params, summaries); metric series are read
when first asked for, in chunks of run ids, never one query per run (reports/records.py).
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from ntklab.db.tables import RunStatus, experiments, metrics, runs
from ntklab.errors import DatabaseError, UsageError
from ntklab.reports.figures import FigureData, figure_data, resolve_figure
from ntklab.reports.images import ImageFigureData
from ntklab.reports.records import chunks, member_rows, run_params, summary_rows



def open_database(db: str | None = None, home: str | Path | None = None) -> Engine:
    """An engine on an existing result database (`db` URL, else NTKLAB_DB, else the home's SQLite)."""
    from ntklab.db.connection import open_engine, resolve_url
    from ntklab.db.schema import ensure_schema
    from ntklab.store import resolve_home

    url = resolve_url(db, resolve_home(Path(home).expanduser() if home is not None else None))
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        raise DatabaseError(f"no database at {url.removeprefix('sqlite:///')}: pass db= or home=")
    engine = open_engine(url)
    ensure_schema(engine)
    return engine


@dataclass
class ExperimentData:
    """One experiment's records. `metrics` (all series) and `series(names)` read lazily."""

    name: str
    description: str
    spec_text: str
    runs: list[dict[str, Any]]
    params: list[dict[str, Any]]
    summaries: list[dict[str, Any]]
    engine: Engine = field(repr=False)
    _ids: dict[str, int] = field(default_factory=dict, repr=False)

    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        """Every recorded point of every metric series of every run."""
        return self.series(None)

    def series(self, names: Sequence[str] | None = None, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Points of the named series (all when None) of the given runs (all when None), by run and step."""
        from ntklab.db.connection import reading

        ids = sorted(self._ids[k] for k in keys) if keys is not None else sorted(self._ids.values())
        key_of = {i: k for k, i in self._ids.items()}
        found: list[dict[str, Any]] = []
        with reading(self.engine) as conn:
            for chunk in chunks(ids):
                query = (select(metrics.c.run_id, metrics.c.name, metrics.c.step, metrics.c.value, metrics.c.wall_time)
                         .where(metrics.c.run_id.in_(chunk))
                         .order_by(metrics.c.run_id, metrics.c.name, metrics.c.step))
                if names is not None:
                    query = query.where(metrics.c.name.in_(list(names)))
                found += [{"key": key_of[r], "name": n, "step": s, "value": v, "wall_time": w}
                          for r, n, s, v, w in conn.execute(query)]
        return found

    def figure(self, name: str) -> "FigureTable":
        """A figure of this experiment (by its name in the spec)."""
        return load_figure(f"{self.name}:{name}", engine=self.engine)

    def frames(self) -> dict[str, Any]:
        """runs, params, summaries and metrics as pandas DataFrames (needs pandas)."""
        pandas = _pandas()
        return {
            "runs": pandas.DataFrame.from_records(self.runs),
            "params": pandas.DataFrame.from_records(self.params),
            "summaries": pandas.DataFrame.from_records(self.summaries),
            "metrics": pandas.DataFrame.from_records(self.metrics, columns=["key", "name", "step", "value",
                                                                            "wall_time"]),
        }

    def to_pandas(self):
        """One row per run, indexed by key: its attributes, its params and the last value of each metric."""
        pandas = _pandas()
        frame = pandas.DataFrame.from_records(self.runs).set_index("key")
        parts = []
        if self.params:
            parts.append((pandas.DataFrame.from_records(self.params).set_index("key"), " (param)"))
        if self.summaries:
            last = pandas.DataFrame.from_records(self.summaries).pivot(index="key", columns="name", values="last")
            parts.append((last, " (metric)"))
        for part, suffix in parts:
            part = part.rename(columns={c: f"{c}{suffix}" for c in part.columns if c in frame.columns})
            frame = frame.join(part)
        return frame

def load_experiment(name: str, db: str | None = None, home: str | Path | None = None, *,
                    engine: Engine | None = None) -> ExperimentData:
    """An experiment's runs, params and metric summaries, read from the database."""
    from ntklab.db.connection import reading

    engine = engine or open_database(db, home)
    with reading(engine) as conn:
        record = conn.execute(select(experiments).where(experiments.c.name == name)).first()
        if record is None:
            known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
            raise UsageError(f"no experiment named {name!r}; known: {', '.join(known) or 'none yet'}")
        rows = member_rows(conn, record.id, runs.c.key, runs.c.task, runs.c.status, runs.c.attempts,
                           runs.c.created_at, runs.c.started_at, runs.c.finished_at, runs.c.error_type,
                           runs.c.error_message)
        by_id: dict[int, dict[str, Any]] = {}
        for row in rows:
            if row.id in by_id:
                by_id[row.id]["group"] += f", {row.group_name}"
                continue
            duration = ((row.finished_at - row.started_at).total_seconds()
                        if row.started_at is not None and row.finished_at is not None else None)
            by_id[row.id] = {"key": row.key, "group": row.group_name, "task": row.task,
                             "status": RunStatus(row.status).value, "attempts": row.attempts,
                             "created_at": row.created_at, "started_at": row.started_at,
                             "finished_at": row.finished_at, "duration_s": duration,
                             "error_type": row.error_type, "error_message": row.error_message}
        ids = sorted(by_id)
        flat = run_params(conn, ids)
        stats = [{"key": by_id[row.run_id]["key"], "name": row.name, "last": row.last, "last_step": row.last_step,
                  "min": row.min, "min_step": row.min_step, "max": row.max, "max_step": row.max_step}
                 for row in summary_rows(conn, ids).values()]
    return ExperimentData(
        name=record.name, description=record.description, spec_text=record.spec_text,
        runs=[by_id[i] for i in ids],
        params=[{"key": by_id[i]["key"], **flat[i]} for i in ids],
        summaries=stats, engine=engine, _ids={by_id[i]["key"]: i for i in ids},
    )


@dataclass
class FigureTable:
    """A figure's table (as `ntklab query --paper` prints it) and its full data."""

    data: FigureData | ImageFigureData

    @property
    def columns(self) -> list[str]:
        return self.data.columns

    @property
    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.data.columns, row)) for row in self.data.rows]

    def to_pandas(self):
        return _pandas().DataFrame.from_records(self.data.rows, columns=self.data.columns)


def load_figure(name: str, db: str | None = None, home: str | Path | None = None, *,
                engine: Engine | None = None) -> FigureTable:
    """The data of a figure declared in a spec: `fig2` or `experiment:fig2` (an images figure
    reads its artifacts from `home`)."""
    from ntklab.db.connection import reading
    from ntklab.store import resolve_home

    engine = engine or open_database(db, home)
    root = resolve_home(Path(home).expanduser() if home is not None else None)
    with reading(engine) as conn:
        return FigureTable(figure_data(conn, resolve_figure(conn, name), root))


def artifact_path(run: str, name: str, db: str | None = None, home: str | Path | None = None) -> tuple[Path, str]:
    """(path, kind) of artifact `name` of the run whose key starts with `run`, checked against its
    record: a file by its sha256, a directory (kernel store) by its manifest of names and sizes."""
    from ntklab.db.connection import reading
    from ntklab.db.tables import artifacts
    from ntklab.reports.overview import resolve_run
    from ntklab.store import directory_manifest, resolve_home

    root = resolve_home(Path(home).expanduser() if home is not None else None)
    engine = open_database(db, root)
    with reading(engine) as conn:
        run_id = resolve_run(conn, run)
        row = conn.execute(select(artifacts.c.path, artifacts.c.kind, artifacts.c.sha256)
                           .where(artifacts.c.run_id == run_id, artifacts.c.name == name)).first()
        if row is None:
            names = conn.execute(select(artifacts.c.name).where(artifacts.c.run_id == run_id)
                                 .order_by(artifacts.c.name)).scalars().all()
            raise UsageError(f"run {run} has no artifact {name!r}; it has: {', '.join(names) or 'none'}")
    path = root / row.path
    if path.is_dir():
        intact = directory_manifest(path)[1] == row.sha256
    else:
        intact = path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == row.sha256
    if not intact:
        raise DatabaseError(f"artifact {name!r} of run {run} at {path} is missing or differs from its record")
    return path, row.kind


def load_artifact(run: str, name: str, db: str | None = None, home: str | Path | None = None) -> Any:
    """Artifact `name` of the run whose key starts with `run`: a `KernelStore` for a kernel store
    (`read_train()`, `read_test()`), a numpy array for `npy` artifacts (eigenvalues, eigenvectors,
    predictions), else its bytes."""
    path, kind = artifact_path(run, name, db, home)
    if kind == "zarr-kernel":
        from ntklab.kernelstore import KernelStore

        return KernelStore.open(path)
    if kind == "npy":
        import numpy as np

        return np.load(path, allow_pickle=False)
    return path.read_bytes()


def _pandas():
    try:
        import pandas
    except ImportError:
        raise ImportError("DataFrames need pandas (pip install pandas); the records work without it") from None
    return pandas
