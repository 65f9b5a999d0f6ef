"""`ntklab worker` and `ntklab run --executor local` through the real CLI, on SQLite and PostgreSQL."""

from conftest import ntklab, start_ntklab
from test_cli_runner import sql

SWEEP = """\
name: pool
groups:
  ok:
    task: probe
    steps: 4
    step_seconds: {step_seconds}
    sweep: {{grid: {{seed: {seeds}}}}}
{executor}"""


def write_sweep(home, seeds, step_seconds=0.02, executor=""):
    (home / "pool.yaml").write_text(SWEEP.format(step_seconds=step_seconds, seeds=list(seeds), executor=executor))


def test_local_executor_executes_every_run_exactly_once(home, db_url):
    write_sweep(home, range(16), step_seconds=0.1)  # 6.4 s of runs: the second worker starts before they are gone
    result = ntklab("run", "pool.yaml", "--executor", "local", "--workers", "2", home=home, db=db_url, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = sql(db_url, "select attempts, status from runs")
    assert len(rows) == 16 and all(r == (1, "done") for r in rows)
    assert sql(db_url, "select count(*) from attempts")[0][0] == 16
    hosts = sql(db_url, "select pid, count(*) from attempts group by pid")
    assert len(hosts) == 2, f"both worker processes should have executed runs: {hosts}"
    assert sql(db_url, "select count(*) from metrics")[0][0] == 16 * 4
    assert len(list((home / "workers").glob("pool-*.log"))) == 2


def record(home, url, spec_name):
    """Record a spec's runs in the queue without executing any (what `ntklab run` does first)."""
    from ntklab.db.connection import open_engine
    from ntklab.db.schema import ensure_schema
    from ntklab.runner.execute import ExecuteOptions, enqueue_plan
    from ntklab.spec.load import load_spec
    from ntklab.tasks import registry
    from ntklab.store import Home

    engine = open_engine(url)
    ensure_schema(engine)
    enqueue_plan(engine, load_spec(home / spec_name, tasks=registry), ExecuteOptions(), Home(home))
    engine.dispose()


def test_worker_claims_only_its_experiments_and_stops_at_max_runs(home):
    url = f"sqlite:///{home / 'ntklab.db'}"
    write_sweep(home, range(3))
    (home / "other.yaml").write_text(SWEEP.format(step_seconds=0, seeds=[9], executor="").replace("pool", "other"))
    record(home, url, "pool.yaml")
    record(home, url, "other.yaml")
    unknown = ntklab("worker", "nosuch", home=home)
    assert unknown.returncode == 2 and "no experiment 'nosuch'" in unknown.stderr and "other, pool" in unknown.stderr
    limited = ntklab("worker", "pool", "--max-runs", "2", home=home, check=True)
    assert "executed 2 runs" in limited.stderr
    by_experiment = dict(sql(url, "select e.name || ':' || r.status, count(*) from runs r "
                                  "join experiments e on e.id = r.experiment_id group by e.name, r.status"))
    assert by_experiment == {"pool:done": 2, "pool:pending": 1, "other:pending": 1}
    drained = ntklab("worker", home=home, check=True)
    assert "executed 2 runs; no run left to claim" in drained.stderr
    assert [s for (s,) in sql(url, "select distinct status from runs")] == ["done"]


def test_worker_idle_exit_while_another_worker_holds_a_run(home):
    """A pool worker waits for runs other workers hold (to reclaim them if they die), unless told
    to leave after some idle seconds."""
    url = f"sqlite:///{home / 'ntklab.db'}"
    write_sweep(home, [0], step_seconds=60.0)  # held for minutes: however slowly the second worker starts
    record(home, url, "pool.yaml")
    holder = start_ntklab("worker", "pool", home=home)
    try:
        while not sql(url, "select 1 from runs where status = 'running'"):
            assert holder.poll() is None, holder.communicate()
        idle = ntklab("worker", "pool", "--idle-exit", "0.5", home=home, check=True)
        assert "executed 0 runs; nothing to claim" in idle.stderr
        assert sql(url, "select status from runs")[0][0] == "running"
    finally:
        holder.kill()
        holder.communicate(timeout=120)


def test_executor_block_of_a_spec_changes_no_run_identity(home):
    write_sweep(home, range(2))
    from ntklab.spec.load import load_spec
    from ntklab.tasks import registry

    keys = [r.key for r in load_spec(home / "pool.yaml", tasks=registry).runs]
    write_sweep(home, range(2), executor="executor: {kind: local, workers: 2}\n")
    with_block = load_spec(home / "pool.yaml", tasks=registry)
    assert [r.key for r in with_block.runs] == keys and with_block.executor.workers == 2
    result = ntklab("run", "pool.yaml", home=home, check=True)
    assert "started 2 local workers" in result.stderr, "the spec's executor block is used"
    url = f"sqlite:///{home / 'ntklab.db'}"
    assert sql(url, "select status, attempts from runs") == [("done", 1)] * 2
    assert len(list((home / "workers").glob("pool-*.log"))) == 2


def test_until_takes_a_time_of_day_or_a_date_and_time_as_naive_utc():
    from datetime import datetime, timedelta, timezone

    import pytest

    from ntklab.cli.worker import parse_until
    from ntklab.errors import UsageError

    now = datetime(2026, 12, 1, 20, 0, tzinfo=timezone(timedelta(hours=1)))
    assert parse_until("21:30", now) == datetime(2026, 12, 1, 20, 30), "later today, in the local zone"
    assert parse_until("19:00", now) == datetime(2026, 12, 2, 18, 0), "a time already past is tomorrow's"
    assert parse_until("2026-12-24T08:00+00:00", now) == datetime(2026, 12, 24, 8, 0)
    with pytest.raises(UsageError, match="--until 'soon'"):
        parse_until("soon", now)
    assert parse_until(None) is None
