"""`ntklab run/plan --group`: one group of a spec, with the upstream runs it needs, through the real CLI."""

from conftest import ntklab
from test_cli_runner import sql, sqlite_url

SPEC = """\
name: sel
groups:
  a:
    task: probe
    steps: 2
    needs: {task: probe, steps: 3, seed: 9}
  b:
    task: probe
    steps: 2
    sweep: {grid: {seed: [1, 2]}}
"""


def test_run_one_group_then_the_rest(home):
    (home / "sel.yaml").write_text(SPEC)
    first = ntklab("run", "sel.yaml", "-g", "a", home=home, check=True)
    assert "2 runs to execute" in first.stderr
    url = sqlite_url(home)
    assert sorted(sql(url, "select group_name, status from runs")) == [("a", "done"), ("a.needs", "done")]

    plan = ntklab("plan", "sel.yaml", "--group", "b", home=home, check=True)
    assert "sel: 2 runs" in plan.stdout + plan.stderr

    rest = ntklab("run", "sel.yaml", home=home, check=True)
    assert "2 runs to execute" in rest.stderr, "the runs of group a are done already"
    assert sorted(sql(url, "select group_name, status, attempts from runs")) == [
        ("a", "done", 1), ("a.needs", "done", 1), ("b", "done", 1), ("b", "done", 1)]


def test_an_upstream_group_alone(home):
    (home / "sel.yaml").write_text(SPEC.replace("  b:", "  b.c:"))
    ntklab("run", "sel.yaml", "-g", "a.needs", home=home, check=True)
    assert sql(sqlite_url(home), "select group_name, status from runs") == [("a.needs", "done")]
    ntklab("run", "sel.yaml", "-g", "b.c", home=home, check=True)
    assert sorted(sql(sqlite_url(home), "select group_name from runs")) == [("a.needs",), ("b.c",), ("b.c",)]


def test_an_unknown_group_names_the_spec_s_groups_and_runs_nothing(home):
    (home / "sel.yaml").write_text(SPEC)
    result = ntklab("run", "sel.yaml", "-g", "c", "-g", "a.need", home=home)
    assert result.returncode == 2
    assert "no group 'c' in sel; its groups: a.needs, a, b" in result.stderr
    assert "no group 'a.need'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (home / "ntklab.db").exists()
