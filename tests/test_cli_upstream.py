"""Runs that need other runs: the upstream run is executed first, reused by identity across
experiments, waited for when another worker holds it, and a failed one blocks its dependents."""

import time

from conftest import ntklab, start_ntklab
from test_cli_runner import sql, sqlite_url

CHILD = """\
name: {name}
groups:
  child:
    task: probe
    steps: 2
    sweep: {{grid: {{seed: [1, 2]}}}}
    needs: {{task: probe, seed: 9, steps: {steps}, artifact_bytes: 64, directory_files: 3,
            step_seconds: {step_seconds}{extra}}}
"""


def spec(home, name="first", steps=3, step_seconds=0.0, extra="") -> str:
    (home / f"{name}.yaml").write_text(CHILD.format(name=name, steps=steps, step_seconds=step_seconds, extra=extra))
    return f"{name}.yaml"


def test_upstream_runs_first_and_is_reused_by_other_experiments(home):
    planned = ntklab("plan", spec(home), home=home, check=True).stdout
    assert "child.needs" in planned, "the upstream run is part of the plan, in a group of its own"
    ntklab("run", spec(home), home=home, check=True)
    url = sqlite_url(home)
    rows = sql(url, "select group_name, status, attempts, started_at from runs order by started_at")
    assert [r[0] for r in rows] == ["child.needs", "child", "child"]
    assert all(r[1:3] == ("done", 1) for r in rows)
    links = sql(url, "select count(*) from run_upstreams where name = 'needs'")
    assert links == [(2,)], "both children record the upstream run they used"
    artifacts = sql(url, "select name, kind, bytes from artifacts order by name")
    assert artifacts == [("blocks", "directory", 3 * 64), ("probe", "bytes", 64)]

    second = ntklab("run", spec(home, name="second"), home=home, check=True)
    assert "0 runs to execute" in second.stderr, "the same upstream config is the same run, already done"
    assert sql(url, "select count(*), sum(attempts) from runs") == [(3, 3)]
    members = sql(url, "select e.name, m.group_name from experiment_runs m join experiments e "
                       "on e.id = m.experiment_id join runs r on r.id = m.run_id where r.group_name = 'child.needs'")
    assert sorted(members) == [("first", "child.needs"), ("second", "child.needs")]


def test_a_damaged_upstream_directory_artifact_is_refused(home):
    ntklab("run", spec(home), home=home, check=True)
    (block,) = [p for p in (home / "runs").rglob("block1")]
    block.write_bytes(b"short")
    result = ntklab("run", spec(home), "--set", "steps=3", home=home)
    assert result.returncode == 1
    assert "differs from what was recorded" in result.stderr


def test_a_failed_upstream_blocks_its_dependents(home):
    result = ntklab("run", spec(home, extra=", fail_at_step: 1"), home=home)
    assert result.returncode == 1
    rows = dict(sql(sqlite_url(home), "select group_name, status from runs where group_name = 'child.needs'"))
    assert rows == {"child.needs": "failed"}
    (upstream,) = sql(sqlite_url(home), "select key from runs where group_name = 'child.needs'")
    blocked = sql(sqlite_url(home), "select status, error_type, attempts, error_message from runs "
                                    "where group_name = 'child'")
    named = f"upstream run needs ({upstream[0][:12]}) failed, so this run cannot run"
    assert [row[:3] for row in blocked] == [("failed", "UpstreamFailed", 0)] * 2
    assert all(row[3].startswith(named) and "--retry-failed" in row[3] for row in blocked), blocked


def test_a_second_worker_waits_for_the_upstream_run_the_first_holds(home):
    name = spec(home, steps=8, step_seconds=0.25)
    first = start_ntklab("run", name, home=home)
    url = sqlite_url(home)
    while True:
        try:
            if sql(url, "select 1 from runs where status = 'running'"):
                break
        except Exception:  # the database may not exist yet
            pass
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = ntklab("run", name, home=home, check=True)
    first.communicate(timeout=120)
    assert first.returncode == 0
    rows = sql(url, "select group_name, status, attempts, started_at, finished_at from runs order by started_at")
    assert [r[1:3] for r in rows] == [("done", 1)] * 3
    upstream_finished = rows[0][4]
    assert rows[0][0] == "child.needs" and all(r[3] >= upstream_finished for r in rows[1:])
    assert "runs to execute" in second.stderr
