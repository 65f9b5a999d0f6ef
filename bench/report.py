"""Report benchmarks: `ntklab query --paper` and `ntklab report` over an experiment of 2,000 runs with
500 evaluation steps each (3 metric series per run: 3 million metric rows), on SQLite and PostgreSQL.

    python bench/report.py [--runs 2000] [--steps 500] [--backends sqlite,postgresql] [--workdir DIR]

PostgreSQL uses the server at NTKLAB_TEST_PG_URL (run under `source scripts/postgres.sh` to start a
throw-away one); a fresh database is created there and dropped afterwards. Without it, only SQLite runs.

The experiment is a grid seed x learning rate x width (20 x 10 x 10 for 2,000 runs), with 1% of the
runs failed and 1% pending, and four figures: final accuracy against the learning rate (last
step), best accuracy and lowest loss (best step, min-max), every evaluation step of every run
(100 curves x 500 steps: the whole series of 2,000 runs is read), and a heat map.

Prints one table: each measurement (wall and CPU seconds), its target and the ratio of the wall
time to the target (below 1 is within target). CLI timings are end to end (process start, imports,
query, output). On a shared machine the wall time includes waiting for a CPU; the CPU seconds do
not. Run by hand, not by CI.
"""

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert, update

from ntklab.db.connection import open_engine, reading, writing
from ntklab.db.models import Metric, MetricSummary, Run, RunStatus
from ntklab.db.queue import PlanRow, enqueue, sync_experiment
from ntklab.db.schema import ensure_schema
from ntklab.reports.figures import figure_data, resolve_figure
from ntklab.reports.html import render_report
from ntklab.flatten import flatten

EXPERIMENT = "bench_report"
SPEC = """\
name: bench_report
description: synthetic sweep for bench/report.py
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
        train.optimizer.lr: [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
        model.width: [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
figures:
  final:
    title: Final test accuracy against the learning rate
    x: train.optimizer.lr
    y: test_accuracy
    series: model.width
  best:
    title: Best test accuracy and lowest test loss
    x: model.width
    y: [test_accuracy, test_loss]
    series: train.optimizer.lr
    step: best
    aggregate: mean_minmax
  curves:
    title: Test accuracy during training
    x: step
    y: test_accuracy
    series: train.optimizer.lr
    facet: model.width
  heat:
    title: Final test accuracy
    kind: heatmap
    x: train.optimizer.lr
    y: test_accuracy
    series: model.width
"""
NAMES = ("test_accuracy", "test_loss", "train_loss")
PROVENANCE = {"packages": {"ntklab": "0.1.0", "jax": "0.6.0"}, "python": "3.11", "host": "bench",
              "ntklab_git": {"commit": "0" * 40, "dirty": False}, "jax": {"backend": "cpu", "devices": ["cpu:0"]}}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def timed_cpu(fn):
    """Wall seconds, CPU seconds of this process (SQLite runs in it) and the value."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - start, time.process_time() - cpu, value


def curve(name: str, lr: float, width: int, seed: int, step: int, steps: int) -> float:
    t = step / steps
    rate = 1.0 + 8 * lr * math.log2(width) / 13
    if name == "test_accuracy":
        return 0.1 + 0.85 * (1 - math.exp(-rate * 6 * t)) + 0.002 * seed - 0.02 * t * t
    base = 2.3 * math.exp(-rate * 5 * t) + 0.02 + 0.001 * seed
    return base * (1.1 if name == "test_loss" else 1.0)


def populate(url: str, spec_text: str, runs: int, steps: int) -> tuple[int, float]:
    """The experiment, its runs and params (as `ntklab run` records them), and synthetic metrics
    with their summaries, inserted in bulk. Returns the number of metric rows and the seconds taken."""
    start = time.perf_counter()
    engine = open_engine(url)
    ensure_schema(engine)
    seeds = runs // 100
    configs = []
    for seed in range(seeds):
        for lr in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0):
            for width in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
                configs.append({"task": "train", "seed": seed, "data": {"dataset": "digits"},
                                "model": {"arch": "mlp", "depth": 2, "width": width},
                                "train": {"optimizer": {"name": "sgd", "lr": lr}, "batch_size": 64, "epochs": 10}})
    rows = [PlanRow(uuid.uuid5(uuid.NAMESPACE_OID, repr(c)).hex * 2, "mlp", "train", c) for c in configs]
    with writing(engine) as conn:
        experiment = sync_experiment(conn, EXPERIMENT, "synthetic sweep", spec_text, "0" * 64, "bench.yaml")
        ids = enqueue(conn, experiment, rows)
    metrics, summaries, table = Metric.__table__, MetricSummary.__table__, Run.__table__
    every = [s * 10 for s in range(steps)]
    count = 0
    now = datetime(2026, 1, 1)
    ordered = [(ids[r.key], r.config) for r in rows]
    for start_index in range(0, len(ordered), 100):
        chunk = ordered[start_index:start_index + 100]
        points, stats, done, failed = [], [], [], []
        for n, (run_id, config) in enumerate(chunk, start=start_index):
            if n % 97 == 13:
                continue  # 1% pending, spread over the curves: no metrics yet
            flat = flatten(config)
            for name in NAMES:
                values = [curve(name, flat["train.optimizer.lr"], flat["model.width"], flat["seed"], s, steps)
                          for s in range(steps)]
                points += [{"run_id": run_id, "name": name, "step": every[s], "value": v, "wall_time": 0.0}
                           for s, v in enumerate(values)]
                low, high = min(range(steps), key=values.__getitem__), max(range(steps), key=values.__getitem__)
                stats.append({"run_id": run_id, "name": name, "last": values[-1], "last_step": every[-1],
                              "min": values[low], "min_step": every[low], "max": values[high], "max_step": every[high]})
            (failed if n % 89 == 7 else done).append(run_id)
        with writing(engine) as conn:
            conn.execute(insert(metrics), points)
            conn.execute(insert(summaries), stats)
            conn.execute(update(table).where(table.c.id.in_(done)).values(
                status=RunStatus.done, started_at=now, finished_at=now + timedelta(seconds=90), attempts=1,
                provenance=PROVENANCE))
            conn.execute(update(table).where(table.c.id.in_(failed)).values(
                status=RunStatus.failed, started_at=now, finished_at=now + timedelta(seconds=5), attempts=1,
                error_type="FloatingPointError", error_message="synthetic failure", provenance=PROVENANCE,
                traceback="Traceback (most recent call last):\n  ...\nFloatingPointError: synthetic failure"))
        count += len(points)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return count, time.perf_counter() - start


def cli(url: str, work: Path, *args: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of the CLI process, end to end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NTKLAB_")}
    env["NTKLAB_DB"] = url
    command = [sys.executable, "-m", "ntklab", *args]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    seconds, result = timed(lambda: subprocess.run(command, check=False, capture_output=True, text=True, env=env,
                                                         cwd=work))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {result.returncode}: {result.stderr[-2000:]}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench_backend(label: str, url: str, work: Path, runs: int, steps: int) -> list[tuple]:
    spec_text = SPEC.format(seeds=list(range(runs // 100)))
    rows_count, seconds_fill = populate(url, spec_text, runs, steps)
    engine = open_engine(url)
    results = [(label, f"fill {runs} runs x {steps} steps x {len(NAMES)} metrics ({rows_count:,} rows)",
                seconds_fill, None, None)]
    with reading(engine) as conn:
        for name in ("final", "best", "curves", "heat"):
            resolve_figure(conn, f"{EXPERIMENT}:{name}")  # warm the caches once
            ref = f"{EXPERIMENT}:{name}"
            seconds, cpu, data = timed_cpu(lambda ref=ref: figure_data(conn, resolve_figure(conn, ref)))
            results.append((label, f"figure query `{name}` in process ({len(data.rows):,} rows)", seconds, cpu, 1.0))
        seconds, cpu, page = timed_cpu(lambda: render_report(conn, EXPERIMENT))
        results.append((label, f"report in process ({len(page) / 1e6:.1f} MB of HTML)", seconds, cpu, 10.0))
    engine.dispose()
    results.append((label, "`ntklab query --paper final` (table), end to end",
                    *cli(url, work, "query", "--paper", f"{EXPERIMENT}:final"), 1.0))
    results.append((label, "`ntklab query --paper best -f csv`, end to end",
                    *cli(url, work, "query", "--paper", f"{EXPERIMENT}:best", "-f", "csv"), 1.0))
    results.append((label, "`ntklab query --paper curves -f csv` (1M points), end to end",
                    *cli(url, work, "query", "--paper", f"{EXPERIMENT}:curves", "-f", "csv"), 1.0))
    results.append((label, "`ntklab report` (4 figures, 2,000 runs), end to end",
                    *cli(url, work, "report", EXPERIMENT, "-o", str(work / f"{label}.html")), 10.0))
    results.append((label, "`ntklab query -e ... --limit 1` (the plain CLI, for scale)",
                    *cli(url, work, "query", "-e", EXPERIMENT, "-c", "key", "--limit", "1"), None))
    return results


def postgres_database(admin: str):
    import psycopg
    from sqlalchemy.engine import make_url

    admin_url = make_url(admin)
    name = f"ntklab_bench_{uuid.uuid4().hex[:10]}"
    plain = admin_url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return admin_url.set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="a multiple of 100")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for backend in args.backends.split(","):
            if backend == "sqlite":
                database = work / "report.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{database}{suffix}").unlink(missing_ok=True)
                rows += bench_backend("sqlite", f"sqlite:///{database}", work, args.runs, args.steps)
            elif backend == "postgresql":
                admin = os.environ.get("NTKLAB_TEST_PG_URL")
                if not admin:
                    print("PostgreSQL skipped: set NTKLAB_TEST_PG_URL (source scripts/postgres.sh starts a server)",
                          file=sys.stderr)
                    continue
                url, drop = postgres_database(admin)
                try:
                    rows += bench_backend("postgresql", url, work, args.runs, args.steps)
                finally:
                    drop()
            else:
                raise SystemExit(f"unknown backend {backend!r}")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores: wall seconds include waiting for the CPU; "
          "cpu seconds are this benchmark's own (the CLI's process, or this one in process)")
    print(f"{'backend':<11} {'measurement':<66} {'wall s':>7} {'cpu s':>6} {'target':>7} {'ratio':>6}")
    for backend, name, seconds, cpu, target in rows:
        ratio = f"{seconds / target:6.2f}" if target else "     -"
        used = f"{cpu:6.2f}" if cpu is not None else "     -"
        print(f"{backend:<11} {name:<66} {seconds:7.2f} {used} {target if target else '-':>7} {ratio}")

if __name__ == "__main__":
    main()
