"""One kernel filled by several workers (ntklab/tasks/kernel_items.py), through the real CLI, on
SQLite and PostgreSQL: the store is the one a single worker writes, byte for byte; a worker
killed mid-kernel loses no finished block; the run downstream waits for the last block."""

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import ntklab, start_ntklab
from test_cli_runner import sql

# 48 training and 32 test points in blocks of 16: 6 blocks of K(train, train) (upper triangle)
# and 6 of K(test, train). With 1.5 million random features a block takes 0.2 s or more even on a fast
# core (0.075 s with half a million: a helper starting a little late found none left to take).
SPEC = """\
name: blocks
defaults:
  seed: 0
  data: &data {{dataset: synthetic, n_train: 48, n_test: 32, dim: 16, num_classes: 3}}
groups:
  kernel:
    task: kernel
    kernel: &rf {{kind: random_features, features: 1572864}}
    block_size: 16
    parallel: {{blocks: {parallel}}}
  krr:
    task: krr
    kernel: {{task: kernel, seed: 0, data: *data, kernel: *rf, block_size: 16}}
    ridge: [1.0e-3]
"""
BLOCKS = 12


def write_spec(home: Path, parallel: bool) -> None:
    (home / "blocks.yaml").write_text(SPEC.format(parallel=str(parallel).lower()))


def store_files(home: Path) -> dict[str, bytes]:
    (kernel_dir,) = (home / "runs").glob("*/kernel")
    return {str(p.relative_to(kernel_dir)): p.read_bytes() for p in sorted(kernel_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single_worker_store(tmp_path_factory) -> dict[str, bytes]:
    """The store `ntklab run` writes alone, without work items."""
    home = tmp_path_factory.mktemp("single")
    write_spec(home, parallel=False)
    ntklab("run", "blocks.yaml", home=home, check=True, timeout=300)
    assert not sql(f"sqlite:///{home / 'ntklab.db'}", "select * from work_items"), "no items without parallel"
    return store_files(home)


def items(db_url: str) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in sql(db_url, "select name, status, attempts, worker_id, pid, finished_at "
                                             "from work_items order by id")}


def kernel_run(db_url: str):
    return sql(db_url, "select id, status, pid, attempts, finished_at from runs where task = 'kernel'")[0]


def test_three_workers_fill_the_store_one_worker_writes(home, db_url, single_worker_store):
    write_spec(home, parallel=True)
    ntklab("run", "blocks.yaml", "--executor", "local", "--workers", "3", home=home, db=db_url, check=True,
           timeout=300)
    assert store_files(home) == single_worker_store, "the same files with the same bytes"
    found = items(db_url)
    assert len(found) == BLOCKS and {name.split("/")[0] for name in found} == {"train", "test_train"}
    assert all(status == "done" and attempts == 1 for status, attempts, *_ in found.values()), found
    assert len({worker for _, _, worker, *_ in found.values()}) >= 2, f"one worker computed every block: {found}"
    _, status, _, attempts, kernel_finished = kernel_run(db_url)
    last_block = max(finished for *_, finished in found.values())
    assert (status, attempts) == ("done", 1) and kernel_finished >= last_block
    (krr_started,) = sql(db_url, "select a.started_at from attempts a join runs r on r.id = a.run_id "
                                 "where r.task = 'krr'")[0]
    assert krr_started >= last_block, "the run downstream is claimed only after the last block"
    metrics = dict(sql(db_url, "select name, value from metrics m join runs r on r.id = m.run_id "
                               "where r.task = 'kernel'"))
    assert metrics["blocks"] == BLOCKS and metrics["workers"] >= 2


def test_a_killed_worker_loses_no_finished_block(home, db_url, single_worker_store):
    write_spec(home, parallel=True)
    process = start_ntklab("run", "blocks.yaml", "--executor", "local", "--workers", "2", "--lease-seconds", "5",
                           home=home, db=db_url)
    try:
        victim = None
        deadline = time.monotonic() + 240
        while victim is None:
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.05)
            if not sql(db_url, "select 1 from information_schema.tables where table_name = 'work_items'"
                       if db_url.startswith("postgresql") else
                       "select 1 from sqlite_master where name = 'work_items'"):
                continue
            owner = sql(db_url, "select pid from runs where task = 'kernel' and status = 'running'")
            held = sql(db_url, "select name, pid from work_items where status = 'running'")
            done = sql(db_url, "select count(*) from work_items where status = 'done'")[0][0]
            helpers = [pid for _, pid in held if owner and pid != owner[0][0]]
            if helpers and done:
                victim = helpers[0]
        os.kill(victim, signal.SIGSTOP)  # frozen, the items it holds stay as they are
        before = items(db_url)
        held = {name for name, (status, _, _, pid, _) in before.items() if status == "running" and pid == victim}
        finished = {name for name, (status, *_) in before.items() if status == "done"}
        os.kill(victim, signal.SIGKILL)
        _, err = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode in (0, 1), err
    assert store_files(home) == single_worker_store
    found = items(db_url)
    assert held and finished and all(status == "done" for status, *_ in found.values()), found
    for name, (_, attempts, _, pid, _) in found.items():
        if name in held:
            assert attempts == 2 and pid != victim, f"{name}, held by the killed worker, is reclaimed by another"
        else:
            assert attempts == 1, f"{name} was claimed twice"
        if name in finished:
            assert pid == before[name][3], f"{name} was finished before the kill and computed again"
    assert kernel_run(db_url)[1] == "done"
