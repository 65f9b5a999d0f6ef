"""ORM classes mapped onto the Core tables of ntklab/db/tables.py (the schema is declared there,
once), for the code that names columns as class attributes (`Run.status`) and for Alembic's
`Base.metadata`. Read-only commands use the tables and never import this module: the ORM is a
third of SQLAlchemy's import time."""

from sqlalchemy import Index, text
from sqlalchemy.orm import DeclarativeBase, column_property

from ntklab.db import tables
from ntklab.db.tables import RunStatus  # noqa: F401 - where the write paths have always imported it


class Base(DeclarativeBase):
    metadata = tables.metadata


class Experiment(Base):
    __table__ = tables.experiments


class SpecVersion(Base):
    __table__ = tables.spec_versions


class Run(Base):
    __table__ = tables.runs


class ExperimentRun(Base):
    __table__ = tables.memberships


class RunUpstream(Base):
    __table__ = tables.upstream_links


class Attempt(Base):
    __table__ = tables.attempts


class Param(Base):
    __table__ = tables.params


class Metric(Base):
    __table__ = tables.metrics


class MetricSummary(Base):
    __table__ = tables.summaries


class Artifact(Base):
    __table__ = tables.artifacts
    __mapper_args__ = {"exclude_properties": ["metadata"]}  # the declarative API reserves `metadata`
    meta = column_property(tables.artifacts.c.metadata)


class Job(Base):
    __table__ = tables.jobs


class WorkItem(Base):
    __table__ = tables.work_items


# The runs a claim may take, in id order (migration 0006): a claim walks this index from its start
# and stops at the first run it can take, so finished runs cost it nothing. It joins the `runs`
# table here, not in tables.py, because its where-clause is a dialect option: declaring one makes
# SQLAlchemy import both dialects' packages (50 ms, an eighth of `ntklab status`), which a command
# that only reads never needs. Alembic compares the migrations with this module's metadata.
_OPEN_STATUSES = text("status IN ('pending', 'interrupted', 'running')")
Index("ix_runs_open", tables.runs.c.id, postgresql_where=_OPEN_STATUSES, sqlite_where=_OPEN_STATUSES)
