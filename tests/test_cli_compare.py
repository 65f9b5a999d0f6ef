"""`ntklab compare` through the real CLI on both databases: differing config keys, metrics side by
side and their differences, and usage errors."""

import json

from conftest import ntklab

SPEC = """\
name: cmp
groups:
  short: {task: probe, steps: 4, sweep: {grid: {seed: [0, 1]}}}
  long: {task: probe, steps: 9, metrics_per_step: 2}
"""


def test_compare_lists_differences_and_metrics(home, db_url):
    (home / "cmp.yaml").write_text(SPEC)
    ntklab("run", "cmp.yaml", home=home, db=db_url, check=True)
    listed = json.loads(ntklab("query", "-e", "cmp", "-c", "key,group,seed,steps", "-f", "json",
                               home=home, db=db_url, check=True).stdout)
    by = {(r["group"], r["seed"]): r["key"] for r in listed}
    first, second, third = by[("short", 0)], by[("short", 1)], by[("long", 0)]
    found = json.loads(ntklab("compare", first[:10], second[:10], third[:10], "-f", "json",
                              home=home, db=db_url, check=True).stdout)
    assert [r["key"] for r in found["runs"]] == [first, second, third]
    assert found["runs"][2]["memberships"] == ["cmp/long"] and {r["status"] for r in found["runs"]} == {"done"}
    assert found["config"] == {"metrics_per_step": [1, 1, 2], "seed": [0, 1, 0], "steps": [4, 4, 9]}
    metrics = {m["name"]: m for m in found["metrics"]}
    assert set(metrics) == {"loss", "loss1"}
    loss = metrics["loss"]
    expected = [1 / 4 + 0.000, 1 / 4 + 0.001, 1 / 9]  # the probe's last value: 1/(1+step) + 0.001 seed
    assert all(abs(a - b) < 1e-12 for a, b in zip(loss["last"], expected))
    assert loss["last_step"] == [3, 3, 8] and abs(loss["min"][2] - 1 / 9) < 1e-12 and loss["max"][2] == 1.0
    assert all(abs(d - (v - expected[0])) < 1e-12 for d, v in zip(loss["difference"], expected[1:]))
    assert metrics["loss1"]["last"][:2] == [None, None] and metrics["loss1"]["difference"] == [None, None]

    table = ntklab("compare", first[:10], third[:10], home=home, db=db_url, check=True).stdout
    assert "steps" in table and "loss1" in table and f"Δ {third[:12]}" in table and "seed" not in table


def test_compare_usage_errors(home):
    (home / "cmp.yaml").write_text(SPEC)
    ntklab("run", "cmp.yaml", home=home, check=True)
    key = json.loads(ntklab("query", "-e", "cmp", "-c", "key", "-f", "json", home=home, check=True).stdout)[0]["key"]
    one = ntklab("compare", key, home=home)
    assert one.returncode == 2 and "at least two runs" in one.stderr
    unknown = ntklab("compare", key, "ffffffffffff", home=home)
    assert unknown.returncode == 2 and "no run key starts with 'ffffffffffff'" in unknown.stderr
    twice = ntklab("compare", key[:8], key, home=home)
    assert twice.returncode == 2 and "named twice" in twice.stderr
