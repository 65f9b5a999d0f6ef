"""Tables. Names and columns are a contract; change them only by migration."""

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, float: Double, datetime: DateTime(timezone=False)}


class RunStatus(str, enum.Enum):
    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"
    diverged = "diverged"


STATUS = Enum(RunStatus, name="run_status", native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


class Experiment(Base):
    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    spec_text: Mapped[str] = mapped_column(Text)
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec_file: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SpecVersion(Base):
    """Every spec text an experiment was run with (experiments holds the latest)."""

    __tablename__ = "spec_versions"
    __table_args__ = (UniqueConstraint("experiment_id", "spec_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    spec_hash: Mapped[str] = mapped_column(String(64))
    spec_text: Mapped[str] = mapped_column(Text)
    spec_file: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), unique=True)
    hash_version: Mapped[int] = mapped_column(Integer)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    group_name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]]
    status: Mapped[RunStatus] = mapped_column(STATUS, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(200))
    host: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    progress_step: Mapped[int | None] = mapped_column(BigInteger)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    checkpoint_step: Mapped[int | None] = mapped_column(BigInteger)
    error_type: Mapped[str | None] = mapped_column(String(200))
    error_message: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    provenance: Mapped[dict[str, Any] | None]


class ExperimentRun(Base):
    """Membership: a run (identified by its config) can belong to several experiments and groups."""

    __tablename__ = "experiment_runs"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True, index=True)
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)


class RunUpstream(Base):
    """A run's named dependencies: runs whose results it needs, executed (or reused) first."""

    __tablename__ = "run_upstreams"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    upstream_run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)


class Attempt(Base):
    """One execution of a run by one worker; a resumed run has several."""

    __tablename__ = "attempts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    attempt: Mapped[int] = mapped_column(Integer, primary_key=True)
    worker_id: Mapped[str] = mapped_column(String(200))
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    status: Mapped[RunStatus] = mapped_column(STATUS)
    resumed_from_step: Mapped[int | None] = mapped_column(BigInteger)


class Param(Base):
    """The flattened config, typed: numbers, strings and booleans in their own columns for queries."""

    __tablename__ = "params"
    __table_args__ = (
        Index("ix_params_key_num", "key", "value_num"),
        Index("ix_params_key_str", "key", "value_str"),
    )

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    value_num: Mapped[float | None]
    value_str: Mapped[str | None] = mapped_column(Text)
    value_bool: Mapped[bool | None] = mapped_column(Boolean)
    value_json: Mapped[Any | None] = mapped_column(JSON)


class Metric(Base):
    """A metric series; NULL values stand for NaN or infinity. Upserted on (run, name, step)."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float | None]
    wall_time: Mapped[float]


class MetricSummary(Base):
    """Last, min and max of each series, maintained on write so listings never scan series."""

    __tablename__ = "metric_summaries"
    __table_args__ = (Index("ix_metric_summaries_name_last", "name", "last"),)

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    last: Mapped[float | None]
    last_step: Mapped[int] = mapped_column(BigInteger)
    min: Mapped[float | None]
    min_step: Mapped[int | None] = mapped_column(BigInteger)
    max: Mapped[float | None]
    max_step: Mapped[int | None] = mapped_column(BigInteger)


class Artifact(Base):
    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("run_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[datetime]


class Job(Base):
    """A batch job an executor submitted to run workers of an experiment (one task of a Slurm job
    array). Its state lives in the scheduler; `cancelled_at` records `ntklab cancel`."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), index=True)
    executor: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str] = mapped_column(String(64))
    folder: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime]
    cancelled_at: Mapped[datetime | None]
