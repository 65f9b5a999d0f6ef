"""Work items on both backends (ntklab/db/work_items.py): claims are exclusive across concurrent
claimers, leases expire, only the holder finishes an item, and only items of running runs are
claimed."""

import threading
from datetime import timedelta

from sqlalchemy import update
from test_db_queue import LEASE, engine, make_runs  # noqa: F401 - the engine fixture

from ntklab.db import work_items
from ntklab.db.connection import HeldConnection, writing
from ntklab.db.models import RunStatus
from ntklab.db.queue import Worker, claim
from ntklab.db.tables import runs

NAMES = [f"train/{i}/{j}" for i in range(6) for j in range(i, 6)]


def running_run(engine) -> int:
    [run_id] = make_runs(engine, 1)
    with HeldConnection(engine) as held:
        assert claim(held, [run_id], Worker("owner:1:o", "elsewhere", 1), LEASE) is not None
    return run_id


def test_items_are_claimed_once_in_order_across_concurrent_claimers(engine):
    run_id = running_run(engine)
    work_items.register(engine, run_id, NAMES, done={NAMES[0]})
    work_items.register(engine, run_id, NAMES)  # again, on resume: nothing changes
    taken: list[str] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        worker = Worker(f"w{index}:{index}:x", "elsewhere", 100 + index)
        while (item := work_items.claim(engine, runs.c.id == run_id, worker, LEASE)) is not None:
            with lock:
                taken.append(item.name)
            assert work_items.finish(engine, item, worker, 0.0)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(NAMES[1:]), "every item once, the one done at registration never"
    assert work_items.counts(engine, run_id) == {RunStatus.done: len(NAMES)}
    assert work_items.computed_by(engine, run_id) >= 1


def test_an_expired_item_is_reclaimed_and_its_old_holder_cannot_finish_it(engine):
    run_id = running_run(engine)
    work_items.register(engine, run_id, NAMES[:2])
    first, second = Worker("a:1:x", "elsewhere", 1), Worker("b:2:y", "elsewhere", 2)
    held = work_items.claim(engine, runs.c.id == run_id, first, timedelta(seconds=-1))  # expired at once
    again = work_items.claim(engine, runs.c.id == run_id, second, LEASE, names=[held.name])
    assert (again.name, again.attempt) == (held.name, 2)
    assert not work_items.finish(engine, held, first, 1.0), "the first worker lost it"
    assert work_items.finish(engine, again, second, 1.0)
    assert work_items.done_names(engine, run_id, NAMES) == {held.name}
    other = work_items.claim(engine, runs.c.id == run_id, first, LEASE)
    assert other.name == NAMES[1] and work_items.heartbeat(engine, first, LEASE) == 1
    assert work_items.release(engine, first) == 1, "a stopping worker gives its items back"
    assert work_items.claim(engine, runs.c.id == run_id, second, LEASE, names=[NAMES[1]]).attempt == 2


def test_items_of_a_run_that_is_not_running_are_not_claimed(engine):
    run_id = running_run(engine)
    work_items.register(engine, run_id, NAMES[:1])
    with writing(engine) as conn:
        conn.execute(update(runs).where(runs.c.id == run_id).values(status=RunStatus.interrupted))
    assert work_items.claim(engine, runs.c.id == run_id, Worker("a:1:x", "elsewhere", 1), LEASE) is None
