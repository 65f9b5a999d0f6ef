"""Whether a running run still has a live worker: its lease, and on this host its process.

Apart from the queue (ntklab/db/queue.py), which writes: `ntklab status` counts lost runs and
must not import the queue's write paths and both dialects' upsert to do so."""

import os
import socket
from datetime import datetime, timezone

from sqlalchemy import Connection, select

from ntklab.db.tables import RunStatus, runs


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def lost_runs(conn: Connection, now: datetime | None = None, alive=None) -> list[tuple[int, str]]:
    """(id, worker id) of the running runs whose worker is gone: its lease expired, or it ran on
    this host and its process no longer exists. Only reads."""
    now = now or utcnow()
    host = socket.gethostname()
    alive = alive or _process_alive
    candidates = conn.execute(
        select(runs.c.id, runs.c.worker_id, runs.c.host, runs.c.pid, runs.c.lease_expires_at)
        .where(runs.c.status == RunStatus.running)
    ).all()
    return [
        (r.id, r.worker_id) for r in candidates
        if (r.lease_expires_at is not None and r.lease_expires_at < now)
        or (r.host == host and r.pid is not None and not alive(r.pid))
    ]


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
