"""A worker's claims on the work items of one run (ntklab/db/work_items.py).

The run's own worker registers the items (`LiveRunContext.work_items`) and claims them like any
helper (ntklab/runner/helping.py); leases of the items held are renewed by a thread, as a run's
are (ntklab/runner/heartbeat.py). A worker that stops gives its items back at once; one that
dies holds them until their lease expires.
"""

import threading
import time
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ntklab.db import work_items
from ntklab.db.queue import Worker
from ntklab.db.tables import RunStatus, runs
from ntklab.db.work_items import ClaimedItem


class ItemClaims:
    """Claim, finish and count the items of one run; a context manager that renews the leases of
    the items held while it is open and gives them back when it closes."""

    def __init__(self, engine: Engine, run_id: int, worker: Worker, lease: timedelta):
        self._engine, self.run_id, self._worker, self._lease = engine, run_id, worker, lease
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ntklab-item-heartbeat", daemon=True)

    def __enter__(self) -> "ItemClaims":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()
        work_items.release(self._engine, self._worker)

    def _beat(self) -> None:
        while not self._stopped.wait(max(self._lease.total_seconds() / 3, 0.05)):
            try:
                work_items.heartbeat(self._engine, self._worker, self._lease)
            except SQLAlchemyError:
                continue  # transient: the lease has slack for the next beat

    def claim(self, names: Sequence[str] | None = None) -> ClaimedItem | None:
        """The next claimable item of the run (among `names` when given), or None."""
        return work_items.claim(self._engine, runs.c.id == self.run_id, self._worker, self._lease, names)

    def finish(self, item: ClaimedItem, seconds: float) -> bool:
        return work_items.finish(self._engine, item, self._worker, seconds)

    def done(self, names: Sequence[str]) -> set[str]:
        return work_items.done_names(self._engine, self.run_id, names)

    def wait_registered(self, should_stop, poll_seconds: float = 0.05) -> bool:
        """Wait until the run's own worker has registered its items: False when it stopped or
        died first, or `should_stop()`."""
        while not self.progress()[1]:
            if should_stop() or not work_items.is_live(self._engine, self.run_id):
                return False
            time.sleep(poll_seconds)
        return True

    def progress(self) -> tuple[int, int]:
        """(items done, items) of the run."""
        counts = work_items.counts(self._engine, self.run_id)
        return counts.get(RunStatus.done, 0), sum(counts.values())

    def workers(self) -> int:
        return work_items.computed_by(self._engine, self.run_id)
