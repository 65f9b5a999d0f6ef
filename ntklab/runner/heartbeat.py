"""A background thread that renews a claimed run's lease while the task works."""

import threading
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ntklab.db.queue import Worker, heartbeat
from ntklab.runner.context import LiveRunContext


class Heartbeat:
    def __init__(self, engine: Engine, run_id: int, worker: Worker, lease: timedelta, ctx: LiveRunContext):
        self._engine, self._run_id, self._worker, self._lease, self._ctx = engine, run_id, worker, lease, ctx
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ntklab-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = max(self._lease.total_seconds() / 3, 0.05)
        while not self._stopped.wait(interval):
            try:
                held = heartbeat(self._engine, self._run_id, self._worker, self._lease, self._ctx.latest_progress)
            except SQLAlchemyError:
                continue  # a transient database error: the lease has slack for the next beat
            if not held:
                self._ctx.lease_lost.set()
                return
