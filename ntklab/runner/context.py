"""The run context handed to a task: buffered metrics, artifacts, checkpoints, progress, stop."""

import hashlib
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from filelock import FileLock
from sqlalchemy import Engine, select

from ntklab.db.connection import reading, writing
from ntklab.db.models import Artifact
from ntklab.db.queue import ClaimedRun, Worker, set_checkpoint_step, upstream_run, utcnow
from ntklab.db.records import MetricPoint, finite_or_none, record_artifact, write_metrics
from ntklab.db.work_items import register
from ntklab.runner.checkpoint import read_checkpoint, save_checkpoint
from ntklab.runner.item_claims import ItemClaims
from ntklab.runner.runlog import RunLog
from ntklab.store import Home, atomic_write, directory_manifest

FLUSH_POINTS = 2_000
FLUSH_SECONDS = 10.0


def _safe(name: str) -> str:
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"artifact names used as directories cannot contain '/' or start with '.': {name!r}")
    return name


class LeaseLost(Exception):
    """Another worker took this run over (our lease expired); this worker must drop it silently."""


class StopFlag:
    """Set by signal handlers; read by tasks through `ctx.should_stop()`."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def set(self, signal_name: str) -> None:
        self.signal_name = self.signal_name or signal_name
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> None:
        """Sleep up to `seconds`, waking early when the flag is set."""
        self._event.wait(seconds)


class LiveRunContext:
    """Implements `ntklab.tasks.context.RunContext` against the database and the home directory."""

    def __init__(self, engine: Engine, home: Home, run: ClaimedRun, worker: Worker, stop: StopFlag,
                 log: RunLog, on_progress: Callable[[int, int], None], lease: timedelta = timedelta(seconds=60)):
        self.run_key = run.key
        self._engine, self._home, self._run, self._worker, self._lease = engine, home, run, worker, lease
        self._stop, self._log, self._on_progress = stop, log, on_progress
        self._pending: list[MetricPoint] = []
        self._last_flush = time.monotonic()
        self._lock = threading.Lock()
        self.lease_lost = threading.Event()
        self.latest_progress: tuple[int, int] | None = None
        self.last_logged_step: int | None = None
        self.latest_values: dict[str, tuple[int, float | None]] = {}  # name -> (step, value) of its last step

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        now = time.time()
        with self._lock:
            points = [MetricPoint(name, int(step), finite_or_none(v), now) for name, v in values.items()]
            self._pending.extend(points)
            for p in points:
                if p.step >= self.latest_values.get(p.name, (p.step, None))[0]:
                    self.latest_values[p.name] = (p.step, p.value)
        self.last_logged_step = int(step)
        if len(self._pending) >= FLUSH_POINTS or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            points, self._pending = self._pending, []
        self._last_flush = time.monotonic()
        if not points:
            return
        self._check_lease()
        with writing(self._engine) as conn:
            write_metrics(conn, self._run.id, points)

    def save_artifact(self, name: str, data: bytes, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._check_lease()
        digest, path = self._home.put_artifact(data)
        with writing(self._engine) as conn:
            record_artifact(conn, self._run.id, name, path, kind, len(data), digest, metadata, utcnow())
        self._log.write(f"artifact {name}: {len(data)} bytes, sha256 {digest[:12]}")

    def load_checkpoint(self) -> bytes | None:
        found = read_checkpoint(self._home, self.run_key, self._log.write)
        return found[1] if found else None

    def save_checkpoint(self, step: int, payload: bytes) -> None:
        self.flush()
        self._check_lease()
        save_checkpoint(self._home, self.run_key, step, payload)
        with writing(self._engine) as conn:
            set_checkpoint_step(conn, self._run.id, self._worker, int(step))
        self._log.write(f"checkpoint at step {step}")

    def progress(self, step: int, total: int) -> None:
        self.latest_progress = (int(step), int(total))
        self._on_progress(int(step), int(total))

    def should_stop(self) -> bool:
        return self._stop.is_set() or self.lease_lost.is_set()

    def work_items(self, names: Sequence[str], done: Collection[str] = ()) -> ItemClaims:
        self._check_lease()
        register(self._engine, self._run.id, names, done)
        return ItemClaims(self._engine, self._run.id, self._worker, self._lease)

    def artifact_dir(self, name: str) -> Path:
        path = self._home.run_dir(self.run_key) / _safe(name)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def record_artifact_dir(self, name: str, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._check_lease()
        path = self.artifact_dir(name)
        size, digest = directory_manifest(path)
        with writing(self._engine) as conn:
            record_artifact(conn, self._run.id, name, str(path.relative_to(self._home.root)), kind, size, digest,
                            metadata, utcnow())
        self._log.write(f"artifact {name}: directory of {size} bytes, manifest sha256 {digest[:12]}")

    def upstream_artifact_dir(self, name: str, artifact: str) -> Path:
        path, recorded, key = self._upstream_artifact_row(name, artifact)
        if not path.is_dir() or directory_manifest(path)[1] != recorded:
            raise OSError(f"directory artifact {artifact!r} of upstream run {name} ({key[:12]}) at {path} is missing "
                          f"files or differs from what was recorded: `ntklab reset {key[:12]}` and running the spec "
                          "again recomputes it")
        return path

    def upstream_artifact(self, name: str, artifact: str) -> bytes:
        path, recorded, key = self._upstream_artifact_row(name, artifact)
        data = path.read_bytes() if path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != recorded:
            raise OSError(f"artifact {artifact!r} of upstream run {name} ({key[:12]}) at {path} is missing or "
                          f"corrupt (its sha256 does not match the one recorded): `ntklab reset {key[:12]}` and "
                          "running the spec again recomputes it")
        return data

    def _upstream_artifact_row(self, name: str, artifact: str) -> tuple[Path, str, str]:
        with reading(self._engine) as conn:
            upstream = upstream_run(conn, self._run.id, name)
            if upstream is None:
                raise KeyError(f"run {self.run_key[:12]} has no upstream run named {name!r}")
            row = conn.execute(
                select(Artifact.path, Artifact.sha256).where(Artifact.run_id == upstream[0], Artifact.name == artifact)
            ).first()
        if row is None:
            raise FileNotFoundError(f"upstream run {name} ({upstream[1][:12]}) has no artifact {artifact!r}")
        return self._home.root / row.path, row.sha256, upstream[1]

    def cached(self, namespace: str, key: str, compute: Callable[[], bytes]) -> bytes:
        path = self._home.cache_path(namespace, key)
        if path.exists():
            return path.read_bytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{path}.lock"):
            if path.exists():
                return path.read_bytes()
            data = compute()
            atomic_write(path, data)
        return data

    def _check_lease(self) -> None:
        if self.lease_lost.is_set():
            raise LeaseLost(f"run {self.run_key[:12]} was taken over by another worker")
