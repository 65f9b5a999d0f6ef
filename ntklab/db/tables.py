"""Tables. Names and columns are a contract; change them only by migration.

Declared as SQLAlchemy Core tables, the one definition of the schema: every query selects
columns, and importing `sqlalchemy.orm` and building declarative classes cost a read-only
command (`ntklab status`) more than its whole query. ntklab/db/models.py maps ORM classes onto
these same tables for the code that names columns as class attributes.
"""

import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)


class RunStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"
    diverged = "diverged"


STATUS = Enum(RunStatus, name="run_status", native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])
TIME = DateTime(timezone=False)

metadata = MetaData()


def _required(name: str, type_, *args, **kwargs) -> Column:
    return Column(name, type_, *args, nullable=False, **kwargs)


def _run_id(**kwargs) -> Column:
    return _required("run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), **kwargs)


def _experiment_id(**kwargs) -> Column:
    return _required("experiment_id", Integer, ForeignKey("experiments.id", ondelete="CASCADE"), **kwargs)


experiments = Table(
    "experiments", metadata,
    Column("id", Integer, primary_key=True),
    _required("name", String(200), unique=True),
    _required("description", Text, default=""),
    _required("spec_text", Text),
    _required("spec_hash", String(64)),
    _required("spec_file", Text, default=""),
    _required("created_at", TIME),
    _required("updated_at", TIME),
)

# Every spec text an experiment was run with (experiments holds the latest).
spec_versions = Table(
    "spec_versions", metadata,
    Column("id", Integer, primary_key=True),
    _experiment_id(),
    _required("spec_hash", String(64)),
    _required("spec_text", Text),
    _required("spec_file", Text),
    _required("created_at", TIME),
    UniqueConstraint("experiment_id", "spec_hash"),
)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    _required("key", String(64), unique=True),
    _required("hash_version", Integer),
    _experiment_id(index=True),
    _required("group_name", String(200)),
    _required("task", String(64)),
    _required("config", JSON),
    _required("status", STATUS, index=True),
    _required("attempts", Integer, default=0),
    _required("created_at", TIME),
    Column("started_at", TIME),
    Column("finished_at", TIME),
    Column("heartbeat_at", TIME),
    Column("lease_expires_at", TIME),
    Column("worker_id", String(200)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("progress_step", BigInteger),
    Column("progress_total", BigInteger),
    Column("checkpoint_step", BigInteger),
    Column("error_type", String(200)),
    Column("error_message", Text),
    Column("traceback", Text),
    Column("provenance", JSON),
    # ix_runs_open, the partial index of open runs (migration 0006), joins this table in
    # ntklab/db/models.py.
)

# Membership: a run (identified by its config) can belong to several experiments and groups.
memberships = Table(
    "experiment_runs", metadata,
    _experiment_id(primary_key=True),
    _run_id(primary_key=True, index=True),
    _required("group_name", String(200), primary_key=True),
)

# A run's named dependencies: runs whose results it needs, executed (or reused) first.
upstream_links = Table(
    "run_upstreams", metadata,
    _run_id(primary_key=True),
    _required("name", String(200), primary_key=True),
    _required("upstream_run_id", Integer, ForeignKey("runs.id", ondelete="CASCADE"), index=True),
)

# One execution of a run by one worker; a resumed run has several.
attempts = Table(
    "attempts", metadata,
    _run_id(primary_key=True),
    _required("attempt", Integer, primary_key=True),
    _required("worker_id", String(200)),
    _required("host", String(255)),
    _required("pid", Integer),
    _required("started_at", TIME),
    Column("ended_at", TIME),
    _required("status", STATUS),
    Column("resumed_from_step", BigInteger),
)

# The flattened config, typed: numbers, strings and booleans in their own columns for queries.
params = Table(
    "params", metadata,
    _run_id(primary_key=True),
    _required("key", String(255), primary_key=True),
    Column("value_num", Double),
    Column("value_str", Text),
    Column("value_bool", Boolean),
    Column("value_json", JSON),
    Index("ix_params_key_num", "key", "value_num"),
    Index("ix_params_key_str", "key", "value_str"),
)

# A metric series; NULL values stand for NaN or infinity. Upserted on (run, name, step).
metrics = Table(
    "metrics", metadata,
    _run_id(primary_key=True),
    _required("name", String(255), primary_key=True),
    _required("step", BigInteger, primary_key=True),
    Column("value", Double),
    _required("wall_time", Double),
)

# Last, min and max of each series, maintained on write so listings never scan series.
summaries = Table(
    "metric_summaries", metadata,
    _run_id(primary_key=True),
    _required("name", String(255), primary_key=True),
    Column("last", Double),
    _required("last_step", BigInteger),
    Column("min", Double),
    Column("min_step", BigInteger),
    Column("max", Double),
    Column("max_step", BigInteger),
    Index("ix_metric_summaries_name_last", "name", "last"),
)

artifacts = Table(
    "artifacts", metadata,
    Column("id", Integer, primary_key=True),
    _run_id(index=True),
    _required("name", String(255)),
    _required("path", Text),
    _required("kind", String(64)),
    _required("bytes", BigInteger),
    _required("sha256", String(64), index=True),
    Column("metadata", JSON),
    _required("created_at", TIME),
    UniqueConstraint("run_id", "name"),
)

# A batch job an executor submitted to run workers of an experiment (one task of a Slurm job
# array). Its state lives in the scheduler; `cancelled_at` records `ntklab cancel`.
jobs = Table(
    "jobs", metadata,
    Column("id", Integer, primary_key=True),
    _experiment_id(index=True),
    _required("executor", String(16)),
    _required("job_id", String(64)),
    _required("folder", Text),
    _required("submitted_at", TIME),
    Column("cancelled_at", TIME),
)

# A piece of one run that any worker can compute under a lease of its own: a block of a kernel
# store, or the features of a batch that the blocks share (ntklab/tasks/kernel_items.py). The
# run's own worker registers them and finishes the run once every item is done; `attempts`,
# `worker_id` and `seconds` record who computed each and how often it was claimed.
work_items = Table(
    "work_items", metadata,
    Column("id", Integer, primary_key=True),
    _run_id(),
    _required("name", String(64)),
    _required("status", STATUS),
    _required("attempts", Integer, default=0),
    Column("worker_id", String(200)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("lease_expires_at", TIME),
    Column("started_at", TIME),
    Column("finished_at", TIME),
    Column("seconds", Double),
    UniqueConstraint("run_id", "name"),
    Index("ix_work_items_run_status", "run_id", "status"),
)
