"""`ntklab export` through the real CLI on both databases: TensorBoard event files read back by
TensorBoard's own event reader equal the metrics in the database, and the long metrics table as
CSV and Parquet equals them too."""

import csv
import io
import math

import numpy as np
import pyarrow.parquet as pq
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from conftest import ntklab
from test_cli_runner import sql

SPEC = """\
name: exp
defaults: {task: probe, steps: 5, metrics_per_step: 2}
groups:
  ok: {sweep: {grid: {seed: [0, 1]}}}
  bad: {diverge_at_step: 2}
"""


def recorded(db_url) -> dict[tuple[str, str], list[tuple[int, float | None, float]]]:
    """(run key, metric) -> [(step, value, wall_time)] straight from the metrics table."""
    found: dict = {}
    for key, name, step, value, wall in sql(db_url, "select r.key, m.name, m.step, m.value, m.wall_time "
                                                    "from metrics m join runs r on r.id = m.run_id "
                                                    "order by r.key, m.name, m.step"):
        found.setdefault((key, name), []).append((step, value, wall))
    return found


def test_tensorboard_export_reads_back_as_the_database(home, db_url):
    (home / "exp.yaml").write_text(SPEC)
    assert "diverged" in ntklab("run", "exp.yaml", home=home, db=db_url, check=True).stderr
    series = recorded(db_url)
    keys = dict(sql(db_url, "select r.key, p.value_num from runs r join params p on p.run_id = r.id "
                            "where p.key = 'seed'"))
    by_dir = {}
    for key, seed in keys.items():
        (group,), = sql(db_url, "select er.group_name from experiment_runs er join runs r on r.id = er.run_id "
                                f"where r.key = '{key}'")
        diverge = "2" if group == "bad" else "None"
        by_dir[f"{group}/diverge_at_step={diverge},seed={int(seed)}"] = (key, group, int(seed))
    result = ntklab("export", "tensorboard", "exp", "tb", home=home, db=db_url, check=True)
    assert f"wrote 3 runs, {sum(len(v) for v in series.values())} points" in result.stdout
    written = {str(p.parent.relative_to(home / "tb")) for p in (home / "tb").rglob("events.out.tfevents.*")}
    assert written == set(by_dir)
    for directory, (key, group, seed) in by_dir.items():
        events = EventAccumulator(str(home / "tb" / directory), size_guidance={"scalars": 0})
        events.Reload()
        tags = set(events.Tags()["scalars"])
        assert tags == {name for k, name in series if k == key}
        for tag in tags:
            read = [(e.step, e.value, e.wall_time) for e in events.Scalars(tag)]
            expected = series[(key, tag)]
            assert [s for s, _, _ in read] == [s for s, _, _ in expected]
            for (_, value, wall), (_, want, want_wall) in zip(read, expected):
                if want is None:
                    assert math.isnan(value), "NaN, recorded as NULL, is NaN in TensorBoard"
                else:
                    assert value == np.float32(want), "TensorBoard keeps float32 scalars"
                assert abs(wall - want_wall) < 1e-6
        content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
        hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
        assert hparams["group"].string_value == group and hparams["seed"].number_value == seed
    again = ntklab("export", "tensorboard", "exp.yaml", "tb", home=home, db=db_url)
    assert again.returncode == 2 and "already holds TensorBoard event files" in again.stderr


def test_long_table_as_csv_and_parquet(home, db_url):
    (home / "exp.yaml").write_text(SPEC)
    ntklab("run", "exp.yaml", home=home, db=db_url)
    series = recorded(db_url)
    expected = sorted((key, name, step, value) for (key, name), points in series.items() for step, value, _ in points)
    text = ntklab("export", "csv", "exp", home=home, db=db_url, check=True).stdout
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["key", "group", "diverge_at_step", "seed", "name", "step", "value", "wall_time"]
    got = sorted((r["key"], r["name"], int(r["step"]), float(r["value"]) if r["value"] else None) for r in rows)
    assert got == expected
    assert {r["seed"] for r in rows if r["group"] == "ok"} == {"0", "1"}

    ntklab("export", "parquet", "exp", "-o", "m.parquet", home=home, db=db_url, check=True)
    table = pq.read_table(home / "m.parquet").to_pylist()
    assert sorted((r["key"], r["name"], r["step"], r["value"]) for r in table) == expected
    assert {r["diverge_at_step"] for r in table} == {None, 2}

    unknown = ntklab("export", "csv", "nope", home=home, db=db_url)
    assert unknown.returncode == 2 and "no experiment named 'nope'" in unknown.stderr
