"""The run queue and records on both backends: claims are exclusive, leases expire, metrics
upsert and summarize, and a resumed run's metrics are truncated and rebuilt."""

import math
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from ntklab.db.connection import HeldConnection, open_engine, reading, writing
from ntklab.db.models import Attempt, Metric, MetricSummary, Param, Run, RunStatus
from ntklab.db.queue import (
    PlanRow,
    Worker,
    claim,
    claim_where,
    claimable_in_experiments,
    enqueue,
    finish,
    heartbeat,
    reap,
    reset,
    sync_experiment,
)
from ntklab.db.records import MetricPoint, truncate_after, write_metrics
from ntklab.db.schema import ensure_schema

LEASE = timedelta(seconds=30)


@pytest.fixture
def engine(db_url):
    engine = open_engine(db_url)
    ensure_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def held(engine):
    with HeldConnection(engine) as held:
        yield held


def make_runs(engine, n: int, experiment: str = "e", group: str = "g") -> list[int]:
    rows = [PlanRow(f"{i:064x}", group, "probe", {"task": "probe", "seed": i, "lr": 0.1 * i, "tag": f"t{i % 2}",
                                                  "flag": i % 2 == 0, "shape": [i, 2]}) for i in range(n)]
    with writing(engine) as conn:
        experiment_id = sync_experiment(conn, experiment, "", "spec", "0" * 64, "spec.yaml")
        ids = enqueue(conn, experiment_id, rows)
    return [ids[r.key] for r in rows]


def test_enqueue_is_idempotent_and_stores_typed_params(engine):
    first = make_runs(engine, 3)
    again = make_runs(engine, 3)
    assert first == again
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(Run)).scalar_one() == 3
        params = {(p.run_id, p.key): p for p in conn.execute(select(Param.__table__)).all()}
    p = params[(first[1], "lr")]
    assert p.value_num == pytest.approx(0.1) and p.value_str is None
    assert params[(first[1], "tag")].value_str == "t1"
    assert params[(first[0], "flag")].value_bool is True
    assert params[(first[2], "shape")].value_json == [2, 2]


def test_claims_are_exclusive_across_threads(engine):
    ids = make_runs(engine, 40)
    taken: list[int] = []
    lock = threading.Lock()

    def work():
        worker = Worker.current()
        worker = Worker(worker.id + threading.current_thread().name, worker.host, worker.pid)
        with HeldConnection(engine) as held:
            while (run := claim(held, ids, worker, LEASE)) is not None:
                with lock:
                    taken.append(run.id)
                with held.statement() as conn:
                    assert finish(conn, run.id, worker, RunStatus.done)

    threads = [threading.Thread(target=work, name=f"w{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(ids)
    with reading(engine) as conn:
        attempts = conn.execute(select(Run.attempts)).scalars().all()
        assert set(attempts) == {1}
        assert conn.execute(select(func.count()).select_from(Attempt)).scalar_one() == 40


def test_expired_lease_is_claimable_and_the_old_worker_loses_the_run(engine, held):
    [run_id] = make_runs(engine, 1)
    first, second = Worker("a:1:x", "elsewhere", 1), Worker("b:2:y", "elsewhere", 2)
    claimed = claim(held, [run_id], first, timedelta(seconds=0.3))
    assert claimed is not None and claimed.attempt == 1
    assert claim(held, [run_id], second, LEASE) is None, "a live lease must not be taken"
    time.sleep(0.5)
    retaken = claim(held, [run_id], second, LEASE)
    assert retaken is not None and retaken.attempt == 2
    assert not heartbeat(held, run_id, first, LEASE, None)
    with writing(engine) as conn:
        assert not finish(conn, run_id, first, RunStatus.done)
        assert finish(conn, run_id, second, RunStatus.done)


def test_a_claim_in_experiments_takes_their_runs_in_order_each_after_its_upstream(engine, held):
    other = make_runs(engine, 2, experiment="other")
    rows = [PlanRow("a" * 64, "g", "probe", {"seed": 0}), PlanRow("b" * 64, "g", "probe", {"seed": 1}),
            PlanRow("c" * 64, "g", "probe", {"seed": 2}, upstream=(("kernel", "a" * 64),)),
            PlanRow("d" * 64, "g", "probe", {"seed": 3})]
    with writing(engine) as conn:
        ids = enqueue(conn, sync_experiment(conn, "mine", "", "spec", "1" * 64, "spec.yaml"), rows)
    worker, scope = Worker("w:1:x", "elsewhere", 1), claimable_in_experiments(["mine"])
    order = []
    while (run := claim_where(held, scope, worker, LEASE)) is not None:
        order.append(run.key[0])
        if run.key[0] == "a":  # "c" waits for "a", which is held until the others are taken
            continue
        with writing(engine) as conn:
            assert finish(conn, run.id, worker, RunStatus.done)
    assert order == ["a", "b", "d"], "in id order, never another experiment's run nor one whose upstream is open"
    with writing(engine) as conn:
        assert finish(conn, ids["a" * 64], worker, RunStatus.done)
    assert claim_where(held, scope, worker, LEASE).key == "c" * 64
    assert claim(held, other, worker, LEASE) is not None, "the other experiment's runs were left"


def test_a_pooled_connection_that_died_while_idle_is_replaced(pg_url, monkeypatch):
    from ntklab.db import connection

    engine = open_engine(pg_url)
    with engine.connect() as conn:
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    with open_engine(pg_url).connect() as admin:
        admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
        admin.commit()
    monkeypatch.setattr(connection, "IDLE_PING_SECONDS", 0.0)  # as if it sat idle for long
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() != pid
    engine.dispose()


def test_a_held_connection_that_died_is_replaced_idle_or_not(pg_url, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from ntklab.db import connection

    def backend(held):
        with held.statement() as conn:
            return conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()

    def terminate(pid):
        with open_engine(pg_url).connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            admin.commit()

    engine = open_engine(pg_url)
    with HeldConnection(engine) as held:
        first = backend(held)
        assert backend(held) == first, "held between statements"
        terminate(first)
        with pytest.raises(OperationalError):
            backend(held)
        second = backend(held)
        assert second != first, "the statement after the failure runs on a new connection"
        terminate(second)
        monkeypatch.setattr(connection, "IDLE_PING_SECONDS", 0.0)  # as if it sat idle for long
        assert backend(held) not in (first, second), "an idle one goes back to the pool, which tests it"
    engine.dispose()


def test_reaper_marks_runs_of_dead_local_processes_interrupted(engine, held):
    import socket

    ids = make_runs(engine, 2)
    dead = Worker("dead", socket.gethostname(), 999_999)
    remote = Worker("remote", "another-host", 999_999)
    claim(held, [ids[0]], dead, LEASE)
    claim(held, [ids[1]], remote, LEASE)
    assert reap(engine, alive=lambda pid: False) == 1
    with reading(engine) as conn:
        status = dict(conn.execute(select(Run.id, Run.status)).all())
    assert status[ids[0]] == RunStatus.interrupted, "a run of a dead process on this host is interrupted"
    assert status[ids[1]] == RunStatus.running, "a remote worker is trusted until its lease expires"


def test_metrics_upsert_and_summaries(engine):
    [run_id] = make_runs(engine, 1)
    with writing(engine) as conn:
        write_metrics(conn, run_id, [MetricPoint("loss", s, v, 0.0) for s, v in [(0, 3.0), (1, 1.0), (2, 2.0)]])
        write_metrics(conn, run_id, [MetricPoint("loss", 1, 5.0, 1.0), MetricPoint("loss", 3, None, 1.0)])
    with reading(engine) as conn:
        values = dict(conn.execute(select(Metric.step, Metric.value).where(Metric.name == "loss")).all())
        summary = conn.execute(select(MetricSummary.__table__)).one()
    assert values == {0: 3.0, 1: 5.0, 2: 2.0, 3: None}
    assert (summary.last, summary.last_step) == (None, 3)
    assert (summary.max, summary.max_step) == (5.0, 1)
    assert (summary.min, summary.min_step) == (2.0, 2)


def test_truncate_after_rebuilds_summaries(engine):
    [run_id] = make_runs(engine, 1)
    with writing(engine) as conn:
        write_metrics(conn, run_id, [MetricPoint("acc", s, s / 10, 0.0) for s in range(10)])
        truncate_after(conn, run_id, 4)
    with reading(engine) as conn:
        steps = conn.execute(select(Metric.step).order_by(Metric.step)).scalars().all()
        summary = conn.execute(select(MetricSummary.__table__)).one()
    assert steps == [0, 1, 2, 3, 4]
    assert summary.last == pytest.approx(0.4) and summary.max == pytest.approx(0.4) and summary.max_step == 4


def test_reset_only_touches_the_requested_statuses(engine):
    ids = make_runs(engine, 3)
    with writing(engine) as conn:
        conn.execute(update(Run).where(Run.id == ids[0]).values(status=RunStatus.failed))
        conn.execute(update(Run).where(Run.id == ids[1]).values(status=RunStatus.running))
        write_metrics(conn, ids[0], [MetricPoint("loss", 0, 1.0, 0.0)])
        reset_ids = reset(conn, ids, [RunStatus.failed, RunStatus.done])
    with reading(engine) as conn:
        status = dict(conn.execute(select(Run.id, Run.status)).all())
        assert conn.execute(select(func.count()).select_from(Metric)).scalar_one() == 0
    assert reset_ids == [ids[0]]
    assert status[ids[0]] == RunStatus.pending
    assert status[ids[1]] == RunStatus.running, "a running run is never reset"


def test_non_finite_metric_values_are_stored_as_null(engine):
    from ntklab.db.records import finite_or_none

    assert finite_or_none(math.nan) is None and finite_or_none(math.inf) is None and finite_or_none(2) == 2.0
