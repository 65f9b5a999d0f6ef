"""The home directory: the SQLite database, the content-addressed artifact store, checkpoints
and run logs. Every file is written atomically (temporary file, fsync, rename), so a killed
process or a full disk never leaves a half-written artifact or checkpoint behind."""

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

from ntklab.errors import UsageError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")

DEFAULT_HOME = ".ntklab"


def default_database_url(home: Path) -> str:
    """The URL of the SQLite database in the home directory."""
    return f"sqlite:///{home / 'ntklab.db'}"


def resolve_home(home: str | Path | None) -> Path:
    """`--home`, else NTKLAB_HOME, else `.ntklab` in the working directory; a path that exists
    and is not a directory is a UsageError."""
    path = Path(home or os.environ.get("NTKLAB_HOME") or DEFAULT_HOME).absolute()
    if path.exists() and not path.is_dir():
        raise UsageError(f"the home {path} (--home or NTKLAB_HOME) is a file, not a directory")
    return path


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _cache_name(part: str) -> str:
    if not _SAFE_NAME.fullmatch(part):
        raise ValueError(f"cache names use letters, digits, '.', '_' and '-' only: {part!r}")
    return part


class Home:
    def __init__(self, root: Path):
        self.root = root

    def artifact_path(self, sha256: str) -> Path:
        return self.root / "artifacts" / sha256[:2] / sha256[2:]

    def put_artifact(self, data: bytes) -> tuple[str, str]:
        """Store bytes by content; returns (sha256, path relative to the home)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.artifact_path(digest)
        if not path.exists():
            atomic_write(path, data)
        return digest, str(path.relative_to(self.root))

    def cache_dir(self, namespace: str) -> Path:
        return self.root / "cache" / _cache_name(namespace)

    def cache_path(self, namespace: str, key: str) -> Path:
        return self.cache_dir(namespace) / _cache_name(key)

    def run_dir(self, run_key: str) -> Path:
        """Where a run's directory artifacts live; it survives the run's attempts."""
        return self.root / "runs" / run_key

    def checkpoint_path(self, run_key: str) -> Path:
        return self.root / "checkpoints" / run_key / "checkpoint.bin"

    def log_path(self, run_key: str) -> Path:
        return self.root / "logs" / f"{run_key}.log"

    def forget_run_files(self, run_key: str) -> None:
        """Delete a run's checkpoint and directory artifacts: it starts again from scratch."""
        shutil.rmtree(self.checkpoint_path(run_key).parent, ignore_errors=True)
        shutil.rmtree(self.run_dir(run_key), ignore_errors=True)


def directory_manifest(path: Path) -> tuple[int, str]:
    """(total bytes, sha256 of the sorted list of relative paths and sizes) of a directory.

    A manifest hash, not a content hash: hashing hundreds of GiB of kernel blocks again would
    cost as much as writing them. It detects missing, extra and truncated files."""
    entries = sorted((str(f.relative_to(path)), f.stat().st_size) for f in path.rglob("*") if f.is_file())
    digest = hashlib.sha256("\n".join(f"{name}\t{size}" for name, size in entries).encode()).hexdigest()
    return sum(size for _, size in entries), digest
