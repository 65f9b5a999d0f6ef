"""A background thread that renews a claimed run's lease while the task works, and records its
progress every PROGRESS_SECONDS when it changed, so `ntklab status` is at most that far behind
(the lease alone is renewed only every third of it, by default 20 s). Only the latest progress is
written, in the same one-row update as the lease, and no write happens while it stands still."""

import threading
import time
from datetime import timedelta

from sqlalchemy.exc import SQLAlchemyError

from ntklab.db.connection import HeldConnection
from ntklab.db.queue import Worker, heartbeat
from ntklab.runner.context import LiveRunContext


PROGRESS_SECONDS = 2.0


class Heartbeat:
    def __init__(self, held: HeldConnection, run_id: int, worker: Worker, lease: timedelta, ctx: LiveRunContext):
        self._held, self._run_id, self._worker, self._lease, self._ctx = held, run_id, worker, lease, ctx
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="ntklab-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        renew_every = max(self._lease.total_seconds() / 3, 0.05)
        renewed, written = time.monotonic(), None
        while not self._stopped.wait(min(renew_every, PROGRESS_SECONDS)):
            progress = self._ctx.latest_progress
            if progress == written and time.monotonic() - renewed < renew_every:
                continue
            try:
                held = heartbeat(self._held, self._run_id, self._worker, self._lease, progress)
            except SQLAlchemyError:
                continue  # a transient database error: the lease has slack for the next beat
            renewed, written = time.monotonic(), progress
            if not held:
                self._ctx.lease_lost.set()
                return
