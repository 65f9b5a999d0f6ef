"""`ntklab gc`: the files in the home that no run in the database references.

- `artifacts/`: content-addressed files; one is referenced while any artifact row has its path
  (runs with equal bytes share one file, so it stays until the last of them goes).
- `runs/<key>/`: a run's directory artifacts (kernel stores); kept while the run exists, recorded
  or not, since a kernel run that is still computing has written blocks before its row.
- `checkpoints/<key>/` and `logs/<key>.log`: kept while the run exists.
- `cache/` (derived datasets, reused by content) is not a run's and is left alone.

A file written after the earliest start of a running run is kept even when unreferenced: its
run may not have recorded it yet.
"""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path

from sqlalchemy import Connection, func, select

from ntklab.db.models import RunStatus
from ntklab.db.tables import artifacts, runs
from ntklab.store import Home


@dataclass(frozen=True)
class Garbage:
    path: Path  # relative to the home
    kind: str  # "artifact", "run directory", "checkpoint", "log"
    bytes: int


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _newest_mtime(path: Path) -> float:
    if path.is_file():
        return path.stat().st_mtime
    return max([path.stat().st_mtime] + [f.stat().st_mtime for f in path.rglob("*")])


def unreferenced(conn: Connection, home: Home) -> list[Garbage]:
    """Every file or directory of the home that no run references, largest first."""
    keys = set(conn.execute(select(runs.c.key)).scalars())
    paths = set(conn.execute(select(artifacts.c.path)).scalars())
    started = conn.execute(select(func.min(runs.c.started_at)).where(runs.c.status == RunStatus.running)).scalar()
    # started_at is naive UTC (db/queue.utcnow); file times are seconds since the epoch
    cutoff = started.replace(tzinfo=timezone.utc).timestamp() if started else None
    found = [g for g in _candidates(home, keys, paths) if cutoff is None or _newest_mtime(home.root / g.path) < cutoff]
    return sorted(found, key=lambda g: (-g.bytes, str(g.path)))


def _candidates(home: Home, keys: set[str], paths: set[str]) -> Iterator[Garbage]:
    root = home.root
    store = root / "artifacts"
    if store.is_dir():
        for file in sorted(store.rglob("*")):
            relative = str(file.relative_to(root))
            if file.is_file() and relative not in paths:
                yield Garbage(Path(relative), "artifact", file.stat().st_size)
    for folder, kind in (("runs", "run directory"), ("checkpoints", "checkpoint")):
        if (root / folder).is_dir():
            for entry in sorted((root / folder).iterdir()):
                if entry.name not in keys:
                    yield Garbage(entry.relative_to(root), kind, _size(entry))
    if (root / "logs").is_dir():
        for log in sorted((root / "logs").glob("*.log")):
            if log.stem not in keys:
                yield Garbage(log.relative_to(root), "log", log.stat().st_size)


def delete_garbage(home: Home, garbage: list[Garbage]) -> int:
    """Delete the listed files and directories (and artifact folders left empty); returns the bytes freed."""
    freed = 0
    for item in garbage:
        path = home.root / item.path
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
            if item.kind == "artifact" and not any(path.parent.iterdir()):
                path.parent.rmdir()
        freed += item.bytes
    return freed
