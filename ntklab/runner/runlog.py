"""The per-run log file (home/logs/<run key>.log) that `ntklab logs RUN` prints.

Lines are appended across attempts, so the log of a resumed run tells its whole story."""

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ntklab.redaction import redact


class RunLog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        for line in redact(message).rstrip("\n").splitlines() or [""]:
            self._handle.write(f"{stamp} {line}\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def follow(path: Path, running: Callable[[], bool], poll_seconds: float = 0.5) -> Iterator[str]:
    """The log's text so far, then each piece appended to it, until `running()` turns False (what
    was written up to then is still read). A log not written yet is waited for."""
    offset = 0
    while True:
        alive = running()
        if path.exists():
            with path.open(encoding="utf-8") as handle:
                handle.seek(offset)
                chunk = handle.read()
                offset = handle.tell()
            if chunk:
                yield chunk
        if not alive:
            return
        time.sleep(poll_seconds)
