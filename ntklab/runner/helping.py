"""Helping: a worker with nothing of its own claims work items of runs other workers execute.

A helper builds what the items need (the task module's `help(config, ctx, items)` hook) and
computes items of that run until none is left to claim; the run's own worker finishes the run
when the last item is done, so the runs downstream of it become claimable then.
"""

import traceback as tb
from datetime import timedelta

from sqlalchemy import ColumnElement, Engine, and_, select

from ntklab.db import work_items
from ntklab.db.connection import reading
from ntklab.db.queue import ClaimedRun, Worker
from ntklab.db.tables import runs
from ntklab.runner.context import LiveRunContext, StopFlag
from ntklab.runner.item_claims import ItemClaims
from ntklab.runner.runlog import RunLog
from ntklab.store import Home
from ntklab.tasks.registry import RUN_CONFIG, help_function


def help_others(engine: Engine, home: Home, scope: ColumnElement[bool], worker: Worker, stop: StopFlag,
                lease: timedelta, refused: set[int]) -> bool:
    """Claim an item of a run in `scope` that another worker executes, and keep computing that
    run's items until none is left to claim. False when there was nothing to help with. A run
    whose items failed here is not helped again by this worker (`refused`); its own worker
    computes them."""
    first = work_items.claim(engine, and_(scope, runs.c.id.notin_(refused)), worker, lease)
    if first is None:
        return False
    with reading(engine) as conn:
        row = conn.execute(select(runs.c.key, runs.c.group_name, runs.c.task, runs.c.config, runs.c.attempts)
                           .where(runs.c.id == first.run_id)).one()
    claimed = ClaimedRun(first.run_id, row.key, row.group_name, row.task, row.config, row.attempts, None)
    log = RunLog(home.log_path(row.key))
    ctx = LiveRunContext(engine, home, claimed, worker, stop, log, lambda step, total: None, lease=lease)
    log.write(f"worker {worker.id} helps with the items of this run")
    try:
        with ItemClaims(engine, first.run_id, worker, lease, first) as items:
            help_function(row.task)(RUN_CONFIG.validate_python(row.config), ctx, items)
    except Exception:  # noqa: BLE001 - the run's own worker computes the items this one could not
        log.write(f"worker {worker.id} could not help, leaves the items to others:\n{tb.format_exc()}")
        refused.add(first.run_id)
    finally:
        log.close()
    return True
