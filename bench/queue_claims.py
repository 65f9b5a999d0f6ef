"""Queue benchmark: many concurrent workers draining runs through the claim / heartbeat / finish
path of ntklab/db/queue.py with a no-op task, on PostgreSQL and on SQLite. (Not bench/queue.py:
a script there would shadow the standard library's `queue`.)

    source scripts/postgres.sh   # or pass --pg URL
    python bench/queue_claims.py [--runs 10000] [--workers 32,128] [--sqlite-runs 2000] [--sqlite-workers 8]

Each claimer is a forked process (nothing of JAX is imported, so forking is safe and pages are
shared) with its own one-connection engine. Prints one table: claims per second, wall-clock
overhead per run and worker (seconds x workers / runs), and duplicate executions (runs claimed
more than once; must be 0). Run by hand, not by CI.
"""

import argparse
import multiprocessing
import os
import tempfile
import time
import uuid
from collections import Counter
from datetime import timedelta

import psycopg
from sqlalchemy.engine import make_url

from ntklab.db.connection import HeldConnection, open_engine, writing
from ntklab.db.models import RunStatus
from ntklab.db.queue import PlanRow, Worker, claim_where, claimable_in_experiments, enqueue, finish, heartbeat, sync_experiment
from ntklab.db.schema import ensure_schema

LEASE = timedelta(seconds=60)
EXPERIMENT = "bench_queue"


def fill(url: str, runs: int) -> None:
    engine = open_engine(url)
    ensure_schema(engine)
    rows = [PlanRow(f"{i:064x}", "noop", "probe", {"task": "probe", "seed": i}) for i in range(runs)]
    with writing(engine) as conn:
        experiment_id = sync_experiment(conn, EXPERIMENT, "", "", "0" * 64, "")
        enqueue(conn, experiment_id, rows)
    engine.dispose()


def claimer(url: str, start, results) -> None:
    engine = open_engine(url)  # this process's own: a forked child never reuses its parent's connections
    worker = Worker.current()
    scope = claimable_in_experiments([EXPERIMENT])
    claimed = []
    with HeldConnection(engine) as held:  # as a worker holds it (ntklab/runner/worker.py)
        with held.statement():
            pass  # connected before the clock starts
        start.wait()
        while (run := claim_where(held, scope, worker, LEASE)) is not None:
            heartbeat(held, run.id, worker, LEASE, (1, 1))
            with held.statement() as conn:  # as the worker records a run's end (ntklab/runner/execute.py)
                finish(conn, run.id, worker, RunStatus.done, progress=(1, 1))
            claimed.append(run.id)
    results.put(claimed)
    engine.dispose()


def drain(url: str, workers: int) -> tuple[float, int, int]:
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    processes = [context.Process(target=claimer, args=(url, start, results)) for _ in range(workers)]
    for p in processes:
        p.start()
    time.sleep(2.0)  # let every claimer connect before the clock starts
    began = time.perf_counter()
    start.set()
    claimed = [results.get() for _ in processes]
    seconds = time.perf_counter() - began
    for p in processes:
        p.join()
    counts = Counter(run_id for ids in claimed for run_id in ids)
    return seconds, sum(counts.values()), sum(n - 1 for n in counts.values() if n > 1)


def pg_database(admin: str) -> str:
    name = f"ntklab_bench_{uuid.uuid4().hex[:8]}"
    plain = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_url(admin).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)


def _row(database: str, workers: int, seconds: float, claims: int, duplicates: int) -> None:
    target = ">= 500 claims/s, 0 duplicates" if database == "postgresql" and workers >= 128 else "0 duplicates"
    print(f"{database:<11} {workers:>7} {claims:>6} {seconds:>8.1f} {claims / seconds:>9.0f} "
          f"{1000 * seconds * workers / claims:>13.1f} {duplicates:>10}  {target}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pg", default=os.environ.get("NTKLAB_TEST_PG_URL"), help="PostgreSQL admin URL")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--workers", default="32,128")
    parser.add_argument("--sqlite-runs", type=int, default=2_000)
    parser.add_argument("--sqlite-workers", type=int, default=8)
    args = parser.parse_args()
    print(f"{'database':<11} {'workers':>7} {'runs':>6} {'seconds':>8} {'claims/s':>9} {'ms/run/worker':>13} "
          f"{'duplicates':>10}  target", flush=True)
    if args.pg:
        for workers in (int(w) for w in args.workers.split(",")):
            url = pg_database(args.pg)
            fill(url, args.runs)
            _row("postgresql", workers, *drain(url, workers))
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{work}/queue.db"
        fill(url, args.sqlite_runs)
        _row("sqlite", args.sqlite_workers, *drain(url, args.sqlite_workers))
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
