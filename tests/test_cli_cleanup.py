"""`ntklab rm`, `gc` and `reset` through the real CLI on both databases: a run shared with another
experiment stays for it, gc frees exactly the files no remaining run references (a shared
artifact file survives until its last run goes), upstream runs that remaining runs need stay."""

import hashlib
import json

from conftest import ntklab
from test_cli_runner import sql

FIRST = """\
name: first
groups:
  a: {task: probe, steps: 3, artifact_bytes: 64, sweep: {grid: {seed: [0, 1]}}}
  d: {task: probe, steps: 3, artifact_bytes: 32, directory_files: 2, seed: 5}
"""
# b is first/a's seed-0 run (the same config); c is another run whose artifact has first/a seed 1's bytes.
SECOND = """\
name: second
groups:
  b: {task: probe, steps: 3, artifact_bytes: 64, seed: 0}
  c: {task: probe, steps: 4, artifact_bytes: 64, seed: 1}
"""


def probe_bytes(seed: int, size: int) -> bytes:
    """The probe's artifact (ntklab/tasks/probe.py: byte i is (seed + i) mod 256)."""
    return bytes((seed + i) % 256 for i in range(size))


def artifact_file(home, seed: int, size: int):
    digest = hashlib.sha256(probe_bytes(seed, size)).hexdigest()
    return home / "artifacts" / digest[:2] / digest[2:]


def keys_by_group(home, db, experiment):
    rows = json.loads(ntklab("query", "-e", experiment, "-c", "key,group,seed", "-f", "json", home=home, db=db,
                             check=True).stdout)
    return {(r["group"], r["seed"]): r["key"] for r in rows}


def test_rm_experiment_then_gc_frees_exactly_the_unreferenced_files(home, db_url):
    (home / "first.yaml").write_text(FIRST)
    (home / "second.yaml").write_text(SECOND)
    ntklab("run", "first.yaml", home=home, db=db_url, check=True)
    ntklab("run", "second.yaml", home=home, db=db_url, check=True)
    first, second = keys_by_group(home, db_url, "first"), keys_by_group(home, db_url, "second")
    shared_run, gone_run, dir_run, other = first[("a", 0)], first[("a", 1)], first[("d", 5)], second[("c", 1)]
    assert second[("b", 0)] == shared_run, "the same config is the same run"
    shared_file, dir_file = artifact_file(home, 1, 64), artifact_file(home, 5, 32)
    assert shared_file.is_file() and dir_file.is_file() and artifact_file(home, 0, 64).is_file()
    assert ntklab("gc", "--dry-run", home=home, db=db_url, check=True).stdout.startswith("nothing to free")

    refused = ntklab("rm", "-e", "first", home=home, db=db_url)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    removed = ntklab("rm", "-e", "first", "--yes", home=home, db=db_url, check=True).stdout
    assert "delete 2 runs, take 1 shared runs out of first and the experiment first" in removed.replace("removed: ", "delete ")
    assert sql(db_url, "select name from experiments") == [("second",)]
    remaining = dict(sql(db_url, "select key, experiment_id from runs"))
    assert set(remaining) == {shared_run, other}
    (second_id,), = sql(db_url, "select id from experiments where name = 'second'")
    assert set(remaining.values()) == {second_id}, "the shared run now belongs to the experiment that keeps it"
    assert sorted(sql(db_url, "select group_name from experiment_runs")) == [("b",), ("c",)]

    expected = {
        dir_file, home / "runs" / dir_run, home / "logs" / f"{gone_run}.log", home / "logs" / f"{dir_run}.log",
    }
    sizes = sum(p.stat().st_size if p.is_file() else sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                for p in expected)
    listed = ntklab("gc", "--dry-run", home=home, db=db_url, check=True).stdout
    assert "dry run" in listed and all(p.exists() for p in expected), "a dry run deletes nothing"
    freed = ntklab("gc", home=home, db=db_url, check=True).stdout
    assert f"freed {sizes} B in 4 files and directories" in freed, freed
    assert not any(p.exists() for p in expected)
    survivors = [shared_file, artifact_file(home, 0, 64), home / "logs" / f"{shared_run}.log",
                 home / "logs" / f"{other}.log"]
    assert all(p.exists() for p in survivors), "files of remaining runs are never deleted"
    assert ntklab("gc", home=home, db=db_url, check=True).stdout.startswith("nothing to free")
    assert ntklab("show", shared_run[:10], home=home, db=db_url, check=True).stdout.count("second/b") == 1

    ntklab("rm", other[:10], "--yes", home=home, db=db_url, check=True)
    assert ntklab("gc", home=home, db=db_url, check=True).returncode == 0
    assert not shared_file.exists(), "the shared artifact goes with the last run that referenced it"
    assert artifact_file(home, 0, 64).exists()


UPSTREAM = """\
name: chain
groups:
  down: {task: probe, steps: 2, needs: {task: probe, steps: 2, artifact_bytes: 16}}
"""


def test_rm_keeps_an_upstream_run_a_remaining_run_needs(home, db_url):
    (home / "chain.yaml").write_text(UPSTREAM)
    ntklab("run", "chain.yaml", home=home, db=db_url, check=True)
    keys = {g: k for (g, _), k in keys_by_group(home, db_url, "chain").items()}
    kept = ntklab("rm", keys["down.needs"][:10], "--yes", home=home, db=db_url, check=True).stdout
    assert "keep: needed by 1 remaining runs" in kept and "nothing to remove" in kept
    assert len(sql(db_url, "select id from runs")) == 2
    ntklab("rm", keys["down"][:10], keys["down.needs"][:10], "--yes", home=home, db=db_url, check=True)
    assert sql(db_url, "select id from runs") == []


def test_reset_puts_a_run_back_to_pending(home, db_url):
    (home / "one.yaml").write_text("name: one\ngroups:\n  p: {task: probe, steps: 3, directory_files: 1}\n")
    ntklab("run", "one.yaml", home=home, db=db_url, check=True)
    (key,), = sql(db_url, "select key from runs")
    assert (home / "runs" / key).is_dir()
    ntklab("reset", key[:8], home=home, db=db_url, check=True)
    assert sql(db_url, "select status, attempts from runs") == [("pending", 1)]
    assert sql(db_url, "select count(*) from metrics")[0][0] == 0 and not (home / "runs" / key).exists()
    ntklab("run", "one.yaml", home=home, db=db_url, check=True)
    assert sql(db_url, "select status, attempts from runs") == [("done", 2)]
    assert sql(db_url, "select count(*) from metrics")[0][0] == 3
