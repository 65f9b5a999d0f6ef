"""A run's checkpoints on disk: the newest and the one before it, each with its step and a sha256
of its payload, so a checkpoint cut short (a full disk, a copy that stopped) or damaged is known
before a task decodes it.

A checkpoint that fails its check is set aside (renamed `*.corrupt-<time>`, named in the run
log) and the run resumes from the one before it, or from the start: it never crashes every
attempt of the run. Writes are atomic (ntklab/store.py), so a killed process leaves the previous
file whole.
"""

import hashlib
import struct
import time
from collections.abc import Callable

from ntklab.store import Home, atomic_write

MAGIC = b"NTKC1\n"
_HEADER = struct.Struct("<q32s")  # step, sha256 of the payload


def save_checkpoint(home: Home, run_key: str, step: int, payload: bytes) -> None:
    """Write the checkpoint at `step`, keeping the current one as the previous."""
    path = home.checkpoint_path(run_key)
    if path.exists():
        path.replace(_previous(path))
    atomic_write(path, MAGIC + _HEADER.pack(int(step), hashlib.sha256(payload).digest()) + payload)


def read_checkpoint(home: Home, run_key: str, log: Callable[[str], None]) -> tuple[int, bytes] | None:
    """(step, payload) of the newest checkpoint that passes its check, or None (start from scratch);
    each one that fails is set aside and reported to `log`."""
    newest = home.checkpoint_path(run_key)
    for path in (newest, _previous(newest)):
        if not path.exists():
            continue
        data = path.read_bytes()
        problem = _problem(data)
        if problem is None:
            step, _ = _HEADER.unpack_from(data, len(MAGIC))
            return step, data[len(MAGIC) + _HEADER.size:]
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
        path.replace(aside)
        log(f"checkpoint {path.name} is {problem}: set aside as {aside.name}")
    return None


def _problem(data: bytes) -> str | None:
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + _HEADER.size:
        return f"not a checkpoint of this format ({len(data)} bytes)"
    _, digest = _HEADER.unpack_from(data, len(MAGIC))
    if hashlib.sha256(data[len(MAGIC) + _HEADER.size:]).digest() != digest:
        return "damaged or cut short (its checksum does not match)"
    return None


def _previous(path):
    return path.with_name(f"previous-{path.name}")
