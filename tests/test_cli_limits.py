"""Sizes and ranges through the real CLI: a sweep too large is refused before it is expanded,
and every number of the command line and of a spec is checked for the range it is used in."""

import sqlite3

import pytest

from conftest import ntklab

PROBE = """\
name: limits
groups:
  p:
    task: probe
    steps: 2
    sweep: {grid: {seed: [0, 1, 2, 3]}}
"""


def million_runs() -> str:
    grid = {"seed": list(range(100)), "steps": list(range(1, 101)), "metrics_per_step": list(range(1, 101))}
    return "name: huge\ngroups:\n  p:\n    task: probe\n    sweep:\n      grid:\n" + "".join(
        f"        {k}: {v}\n" for k, v in grid.items())


def test_a_sweep_above_the_limit_is_refused_before_expanding_and_max_runs_raises_it(home):
    (home / "huge.yaml").write_text(million_runs())
    refused = ntklab("run", "huge.yaml", home=home, timeout=30)
    assert refused.returncode == 2, refused.stderr
    assert "huge.yaml:5:" in refused.stderr and "1,000,000 runs, more than the limit of 100,000" in refused.stderr
    assert not (home / "ntklab.db").exists(), "nothing was recorded"
    (home / "p.yaml").write_text(PROBE)
    assert ntklab("plan", "p.yaml", "--max-runs", "3", home=home).returncode == 2
    assert "4 runs" in ntklab("plan", "p.yaml", "--max-runs", "4", home=home, check=True).stdout


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "p.yaml").write_text(PROBE)
    ntklab("run", "p.yaml", home=home, check=True)
    return home


@pytest.mark.parametrize("args, fragment", [
    (["run", "p.yaml", "--lease-seconds", "0"], "--lease-seconds"),
    (["run", "p.yaml", "--lease-seconds", "-5"], "--lease-seconds"),
    (["run", "p.yaml", "--lease-seconds", "nan"], "--lease-seconds"),
    (["run", "p.yaml", "--lease-seconds", "inf"], "--lease-seconds"),
    (["query", "--limit", "123456789012345678901"], "--limit"),
    (["watch", "--interval", "nan", "--once"], "--interval"),
    (["worker", "--idle-exit", "nan"], "--idle-exit"),
    (["run", "p.yaml", "--executor", "slurm", "--mem-gb", "inf"], "--mem-gb"),
    (["query", "--limit", "0"], "--limit"),
    (["plan", "p.yaml", "--max-runs", "-1"], "--max-runs"),
    (["run", "p.yaml", "--set", "step_seconds=.inf"], "step_seconds: Input should be a finite number"),
    (["run", "p.yaml", "--set", "step_seconds=.nan"], "step_seconds: Input should be a finite number"),
    (["run", "p.yaml", "--set", "seed=4294967296"], "seed: Input should be less than 4294967296"),
    (["run", "p.yaml", "--set", "seed=-1"], "seed: Input should be greater than or equal to 0"),
    (["run", "p.yaml", "--set", "steps=123456789012345678901234567890"], "outside the range"),
    (["run", "lr.yaml"], "lr.yaml:5: train.optimizer.lr: Input should be a finite number"),
    (["run", "seed.yaml"], "seed.yaml:6: groups.p.seed: the integer 123456789012345678901234567890 is outside"),
])
def test_out_of_range_numbers_exit_2_and_change_nothing(recorded_home, args, fragment):
    home = recorded_home
    (home / "lr.yaml").write_text("name: lr\ndefaults:\n  data: {dataset: digits}\n"
                                  "  model: {arch: mlp, width: 8}\n  train: {optimizer: {name: sgd, lr: .inf}}\n"
                                  "groups:\n  t: {task: train}\n")
    (home / "seed.yaml").write_text(PROBE.replace("steps: 2", "steps: 2\n    seed: 123456789012345678901234567890")
                                    .replace("    sweep: {grid: {seed: [0, 1, 2, 3]}}\n", ""))
    with sqlite3.connect(home / "ntklab.db") as conn:
        before = list(conn.iterdump())
    result = ntklab(*args, home=home)
    assert result.returncode == 2, result.stderr
    assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr
    with sqlite3.connect(home / "ntklab.db") as conn:
        assert list(conn.iterdump()) == before
