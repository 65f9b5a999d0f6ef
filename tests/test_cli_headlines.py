"""Results where you look, through the real CLI on both databases: the line of a finished run and
`ntklab run`'s summary show the headline metrics (a figure's y before the task's own), and
`ntklab status` shows step/total, the latest headline value and an ETA of a running run."""

import json
import re
import time

from conftest import ntklab, start_ntklab

SWEEP = """\
name: headlines
groups:
  p: {task: probe, steps: 4, metrics_per_step: 2, sweep: {grid: {seed: [0, 1, 2]}}}
figures:
  f: {x: seed, y: [loss1, loss]}
"""


def probe_last(seed: int, series: int, steps: int = 4) -> float:
    """The probe's value at its last step (ntklab/tasks/probe.py: 1/(1+step) + 0.001 seed + series)."""
    return 1.0 / steps + 0.001 * seed + series


def test_finished_runs_and_the_summary_show_headline_metrics(home, db_url):
    (home / "headlines.yaml").write_text(SWEEP)
    result = ntklab("run", "headlines.yaml", "-f", "json", home=home, db=db_url, check=True)
    finished = [line for line in result.stderr.splitlines() if ": done in " in line]
    assert len(finished) == 3
    assert all(re.search(r"  loss1 1\.25[0-2]?  loss 0\.25[0-2]?$", line) for line in finished), finished
    summary = json.loads(result.stdout)
    unclear, loss = summary["headlines"]
    assert [h["metric"] for h in (unclear, loss)] == ["loss1", "loss"], "the figure's y metrics, in its order"
    for headline, series in ((unclear, 1), (loss, 0)):
        values = [probe_last(seed, series) for seed in (0, 1, 2)]
        assert headline["group"] == "p" and headline["n"] == 3
        assert abs(headline["mean"] - sum(values) / 3) < 1e-12
    assert unclear["best"] is None, "`loss1` does not say which direction is better"
    assert abs(loss["best"] - probe_last(0, 0)) < 1e-12, "loss-like: the best is the smallest"
    keys = json.loads(ntklab("query", "-e", "headlines", "-w", "seed == 0", "-c", "key", "-f", "json",
                             home=home, db=db_url, check=True).stdout)
    assert loss["best_run"] == keys[0]["key"]
    table = ntklab("run", "headlines.yaml", home=home, db=db_url, check=True).stdout
    assert "headline metrics" in table and "loss1" in table


def test_status_shows_progress_metric_and_eta_of_a_running_run(home, db_url):
    (home / "slow.yaml").write_text(
        "name: slow\ngroups:\n  s: {task: probe, steps: 40, step_seconds: 0.25, checkpoint_every_steps: 2}\n")
    process = start_ntklab("run", "slow.yaml", "--lease-seconds", "5", home=home, db=db_url)
    try:
        deadline, line = time.monotonic() + 60, ""
        while time.monotonic() < deadline:
            shown = ntklab("status", "slow", home=home, db=db_url)
            line = next((x for x in shown.stdout.splitlines() if x.startswith("running ")), "")
            if "ETA" in line and "loss" in line:
                break
            time.sleep(0.5)
        match = re.search(r"\(slow/s\): step (\d+)/40  loss ([0-9.]+)  ETA (\d+)s on ", line)
        assert match, line
        step, loss, eta = int(match[1]), float(match[2]), int(match[3])
        assert 0 < step < 40 and eta <= (40 - step) * 0.25 * 3 + 2, line
        assert 1 / 40 < loss <= 1.0, "the latest loss of the probe series"
    finally:
        process.terminate()
        process.communicate(timeout=60)
