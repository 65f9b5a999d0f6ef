"""Two spec files with the same `name:` through the real CLI, on SQLite and PostgreSQL: the second
adds a spec version with a warning, and the figures of both stay queryable."""

from conftest import ntklab

FIRST = """\
name: shared
groups:
  a: {task: probe, steps: 3}
figures:
  first_loss: {x: step, y: loss, series: group}
"""

SECOND = """\
name: shared
groups:
  b: {task: probe, steps: 4, seed: 1}
figures:
  second_loss: {x: step, y: loss, series: group}
"""


def test_a_second_spec_with_the_same_name_adds_a_version_and_keeps_the_first_figures(home, db_url):
    (home / "first.yaml").write_text(FIRST)
    (home / "second.yaml").write_text(SECOND)
    first = ntklab("run", "first.yaml", home=home, db=db_url, check=True)
    assert "spec version" not in first.stderr
    second = ntklab("run", "second.yaml", home=home, db=db_url, check=True)
    assert "second.yaml adds spec version 2 to the experiment 'shared'" in second.stderr
    again = ntklab("run", "second.yaml", home=home, db=db_url, check=True)
    assert "spec version" not in again.stderr, "a version already recorded is no news"
    for figure in ("first_loss", "second_loss"):
        table = ntklab("query", "--paper", f"shared:{figure}", "--format", "csv", home=home, db=db_url, check=True)
        assert len(table.stdout.strip().splitlines()) > 1, table.stdout
    assert ntklab("query", "--paper", "shared:nothing", home=home, db=db_url).returncode == 2
