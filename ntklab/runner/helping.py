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
from ntklab.tasks.registry import RUN_CONFIG, help_function, helping_tasks, split_function


def help_others(engine: Engine, home: Home, scope: ColumnElement[bool], worker: Worker, stop: StopFlag,
                lease: timedelta, refused: set[int], started: set[int]) -> bool:
    """Find a run in `scope` that another worker executes and that has items to claim, or that
    its task says will split (the hook `splits(config)`: the helper then builds what the items
    need while the run's worker does the same, once per run, `started`); build, then compute
    its items until none is left to claim. The items are claimed after the build: an item held
    through a long start would wait for it. False when there was nothing to help with. A run
    whose items failed here is not helped again by this worker (`refused`)."""
    run_id = work_items.claimable_run(engine, and_(scope, runs.c.id.notin_(refused)))
    if run_id is None:
        early = [r for r in work_items.unsplit_runs(engine, and_(scope, runs.c.id.notin_(refused | started)),
                                                    helping_tasks())
                 if split_function(r[1])(RUN_CONFIG.validate_python(r[2]))]
        if not early:
            return False
        run_id = early[0][0]
    started.add(run_id)
    with reading(engine) as conn:
        row = conn.execute(select(runs.c.key, runs.c.group_name, runs.c.task, runs.c.config, runs.c.attempts)
                           .where(runs.c.id == run_id)).one()
    claimed = ClaimedRun(run_id, row.key, row.group_name, row.task, row.config, row.attempts, None)
    log = RunLog(home.log_path(row.key))
    ctx = LiveRunContext(engine, home, claimed, worker, stop, log, lambda step, total: None, lease=lease)
    log.write(f"worker {worker.id} helps with the items of this run")
    try:
        with ItemClaims(engine, run_id, worker, lease) as items:
            help_function(row.task)(RUN_CONFIG.validate_python(row.config), ctx, items)
    except Exception:  # noqa: BLE001 - the run's own worker computes the items this one could not
        log.write(f"worker {worker.id} could not help, leaves the items to others:\n{tb.format_exc()}")
        refused.add(run_id)
    finally:
        log.close()
    return True
