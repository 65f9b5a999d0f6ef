"""The Core tables behind the ORM models, for the queries that select columns rather than objects."""

from ntklab.db.models import (
    Artifact,
    Attempt,
    Experiment,
    ExperimentRun,
    Job,
    Metric,
    MetricSummary,
    Param,
    Run,
    RunUpstream,
    SpecVersion,
)

runs = Run.__table__
experiments = Experiment.__table__
memberships = ExperimentRun.__table__
params = Param.__table__
metrics = Metric.__table__
summaries = MetricSummary.__table__
artifacts = Artifact.__table__
upstream_links = RunUpstream.__table__
attempts = Attempt.__table__
spec_versions = SpecVersion.__table__
jobs = Job.__table__
