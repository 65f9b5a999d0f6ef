"""Runner benchmarks: planning a 10,000-run sweep (against validating every run config whole, the
peer) and recording it, planning 100,000 runs (the default --max-runs) with the CLI's time and
peak memory, refusing a 1,000,000-run sweep, the runner's per-run bookkeeping with a no-op task,
and `query` latency over 10,000 runs with 1,000 metric steps each, on SQLite.

    python bench/runner.py [--runs 10000] [--limit-runs 100000] [--steps 1000] [--noop-runs 500] [--workdir DIR]

Prints one table: each measurement, its target and the ratio of measured to target (below 1 is
within target). Run by hand, not by CI; a full run takes a few minutes on 2 cores.
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Metric, Run, RunStatus
from ntklab.db.records import MetricPoint, write_metrics
from ntklab.db.schema import ensure_schema
from ntklab.reports.runs import list_runs
from ntklab.runner.execute import ExecuteOptions, enqueue_plan
from ntklab.runner.worker import execute
from ntklab.runner.plan import plan_groups
from ntklab.runner.progress import PlainReporter
from ntklab.spec.load import load_spec
from ntklab.spec.validation import WholeValidation
from ntklab.store import Home
from ntklab.tasks import registry

SWEEP_SPEC = """\
name: bench_plan
defaults:
  data: {{dataset: digits}}
  train: {{optimizer: {{name: sgd, lr: 0.1}}, batch_size: 64, epochs: 10}}
groups:
  mlp:
    task: train
    model: {{arch: mlp, depth: 2, width: 128}}
    sweep:
      grid:
        seed: {seeds}
        train.optimizer.lr: [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        model.width: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
"""

NOOP_SPEC = """\
name: bench_noop
groups:
  noop:
    task: probe
    steps: 1
    metrics_per_step: 4
    artifact_bytes: 1024
    sweep: {{grid: {{seed: {seeds}}}}}
"""


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def bench_plan(work: Path, runs: int) -> list[tuple]:
    spec = work / "plan.yaml"
    spec.write_text(SWEEP_SPEC.format(seeds=list(range(runs // 100))))
    engine = open_engine(f"sqlite:///{work / 'plan.db'}")
    ensure_schema(engine)
    seconds_load, plan = timed(lambda: load_spec(spec, tasks=registry))
    seconds_whole, _ = timed(lambda: load_spec(spec, tasks=WholeValidation(registry)))
    seconds_fresh, _ = timed(lambda: plan_groups(engine, plan))
    seconds_record, _ = timed(lambda: enqueue_plan(engine, plan, ExecuteOptions(), Home(work)))
    seconds_known, _ = timed(lambda: plan_groups(engine, load_spec(spec, tasks=registry)))
    cli = [sys.executable, "-m", "ntklab", "plan", str(spec), "--db", f"sqlite:///{work / 'plan.db'}"]
    seconds_cli, _ = timed(lambda: subprocess.run(cli, check=True, capture_output=True))
    return [
        (f"load + validate + hash {len(plan.runs)} runs", seconds_load, None),
        ("the same, every run config validated whole (peer)", seconds_whole, None),
        ("  ratio of the two (whole / shared blocks)", seconds_whole / seconds_load, None),
        (f"plan {len(plan.runs)} runs, empty database", seconds_load + seconds_fresh, 2.0),
        (f"record {len(plan.runs)} runs (enqueue: runs, params, memberships)", seconds_record, None),
        (f"plan {len(plan.runs)} runs, all recorded", seconds_known, 2.0),
        (f"`ntklab plan` CLI, {len(plan.runs)} recorded runs", seconds_cli, 2.0),
    ]


def bench_limit(work: Path, runs: int) -> list[tuple]:
    """`ntklab plan` of `runs` runs (time, CPU time and peak resident memory of the command: it is
    the first child process, so RUSAGE_CHILDREN's peak is its own), and of a sweep ten times larger,
    which is refused before it is expanded."""
    rows = []
    for count, flags in ((runs, ["--max-runs", str(runs)]), (runs * 10, ["--max-runs", str(runs)])):
        spec = work / f"limit{count}.yaml"
        spec.write_text(SWEEP_SPEC.format(seeds=list(range(count // 100))).replace("bench_plan", "bench_limit"))
        cli = [sys.executable, "-m", "ntklab", "plan", str(spec), "--db", f"sqlite:///{work / 'limit.db'}", *flags]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds, result = timed(lambda: subprocess.run(cli, capture_output=True, text=True))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if count == runs:
            assert result.returncode == 0, result.stderr
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            rows += [(f"`ntklab plan` CLI, {count:,} runs, empty database", seconds, 5.0),
                     ("CPU time of that command (user + system; on a loaded machine, near its idle time)", cpu, 5.0),
                     ("peak resident memory of that command (MB)", after.ru_maxrss / 1024, 500.0)]
        else:
            assert result.returncode == 2 and "more than the limit" in result.stderr, result.stderr
            rows.append((f"`ntklab plan` refusing a {count:,}-run sweep", seconds, 2.0))
    return rows


def bench_noop(work: Path, runs: int) -> list[tuple]:
    spec = work / "noop.yaml"
    spec.write_text(NOOP_SPEC.format(seeds=list(range(runs))))
    engine = open_engine(f"sqlite:///{work / 'noop.db'}")
    ensure_schema(engine)
    plan = load_spec(spec, tasks=registry)
    devnull = open("/dev/null", "w")
    seconds, result = timed(lambda: execute(engine, Home(work), plan, ExecuteOptions(), PlainReporter(devnull)))
    assert len(result.outcomes) == runs and all(o.status == "done" for o in result.outcomes)
    return [(f"runner overhead per no-op run ({runs} runs: claim, 4 metrics, 1 artifact, finish)",
             seconds / runs, 0.020)]


def populate_metrics(engine, run_ids: list[int], steps: int) -> None:
    names = ("test_accuracy", "train_loss")
    for start in range(0, len(run_ids), 50):
        with writing(engine) as conn:
            for run_id in run_ids[start:start + 50]:
                points = [MetricPoint(name, s * 10, 1.0 / (1 + s) + 0.001 * run_id, 0.0)
                          for name in names for s in range(steps // len(names))]
                write_metrics(conn, run_id, points)
            conn.execute(Run.__table__.update().where(Run.id.in_(run_ids[start:start + 50]))
                         .values(status=RunStatus.done))


def bench_query(work: Path, runs: int, steps: int) -> list[tuple]:
    spec = work / "query.yaml"
    spec.write_text(SWEEP_SPEC.format(seeds=list(range(runs // 100))).replace("bench_plan", "bench_query"))
    url = f"sqlite:///{work / 'query.db'}"
    engine = open_engine(url)
    ensure_schema(engine)
    ids = enqueue_plan(engine, load_spec(spec, tasks=registry), ExecuteOptions(), Home(work))
    seconds_fill, _ = timed(lambda: populate_metrics(engine, sorted(ids.values()), steps))
    with reading(engine) as conn:
        rows = conn.execute(select(func.count()).select_from(Metric)).scalar_one()
    where = "model.width >= 1024 and train.optimizer.lr in [0.1, 0.2] and test_accuracy > 0.01"

    def query(**kwargs):
        with reading(engine) as conn:
            return list_runs(conn, experiment="bench_query", **kwargs)

    seconds_all, table_all = timed(lambda: query())
    seconds_where, table_where = timed(lambda: query(where=where))
    cli = [sys.executable, "-m", "ntklab", "query", "-e", "bench_query", "-w", where, "--db", url, "-f", "csv"]
    seconds_cli, _ = timed(lambda: subprocess.run(cli, check=True, capture_output=True))
    return [
        (f"fill {len(ids)} runs x {steps} metric points ({rows:,} rows)", seconds_fill, None),
        (f"query all {len(table_all.rows)} runs, default columns", seconds_all, 1.0),
        (f"query with a filter ({len(table_where.rows)} runs match)", seconds_where, 1.0),
        ("`ntklab query` CLI with that filter, end to end", seconds_cli, 1.0),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--limit-runs", type=int, default=100_000)
    parser.add_argument("--steps", type=int, default=1_000)
    parser.add_argument("--noop-runs", type=int, default=500)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = (bench_limit(work, args.limit_runs) + bench_plan(work, args.runs) + bench_noop(work, args.noop_runs)
                + bench_query(work, args.runs, args.steps))
    print(f"{'measurement (seconds unless named)':<78} {'value':>9} {'target':>7} {'ratio':>6}")
    for name, seconds, target in rows:
        ratio = f"{seconds / target:6.2f}" if target else "     -"
        print(f"{name:<78} {seconds:9.3f} {target if target else '-':>7} {ratio}")


if __name__ == "__main__":
    main()
