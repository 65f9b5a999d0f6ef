"""Downloads of the official dataset files: resumable, verified, atomic.

Each file is streamed into `<file>.part` next to its destination. An interrupted download leaves
the `.part` file behind and the next fetch asks the server for the remaining bytes only (an HTTP
Range request); a server that ignores the range sends the whole file and the download starts over.
A complete `.part` file is verified (size and sha256 or md5, against the table in files.py) and
only then renamed to its final name, so a file under its official name is always whole.

`NTKLAB_DATA_MIRROR` (or `mirror=`) replaces the official locations with a mirror laid out like
the data root: `<mirror>/<dataset>/<file>`.
"""

import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Protocol

from filelock import FileLock

from ntklab.data.files import (
    DataError,
    DatasetFiles,
    FileEntry,
    data_root,
    dataset_files,
    dataset_status,
    file_problem,
)

MIRROR_ENV = "NTKLAB_DATA_MIRROR"
CHUNK = 1 << 16
USER_AGENT = "ntklab-data-fetch/1"
LOCK_NAME = ".fetch.lock"


class Progress(Protocol):
    def start(self, label: str, total: int | None, completed: int) -> None: ...
    def advance(self, count: int) -> None: ...
    def finish(self) -> None: ...


class RichProgress:
    """A rich progress bar per file: bytes done, total, speed, time left."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                  TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False)
        self._task = None

    def start(self, label: str, total: int | None, completed: int) -> None:
        if self._task is None:
            self._progress.start()
        else:
            self._progress.stop_task(self._task)
        self._task = self._progress.add_task(label, total=total, completed=completed)

    def advance(self, count: int) -> None:
        self._progress.advance(self._task, count)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop()
            self._task = None


class _Silent:
    def start(self, label, total, completed): pass
    def advance(self, count): pass
    def finish(self): pass


class _ShortTransfer(Exception):
    """The connection ended before the announced number of bytes arrived."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    action: str  # "present", "downloaded", "resumed"


def _urls(files: DatasetFiles, entry: FileEntry, mirror: str | None) -> tuple[str, ...]:
    mirror = mirror if mirror is not None else os.environ.get(MIRROR_ENV)
    if mirror:
        return (f"{mirror.rstrip('/')}/{files.name}/{entry.path}",)
    return entry.urls


def _transfer(url: str, part: Path, entry: FileEntry, timeout: float, progress: Progress) -> bool:
    """Stream `url` into `part`, resuming from its current size. True when it resumed."""
    offset = part.stat().st_size if part.exists() else 0
    if entry.size is not None and offset > entry.size:
        part.unlink()
        offset = 0
    if entry.size is not None and offset == entry.size:
        return True  # complete already; verification decides
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:  # nothing left past the end: the part file is whole or wrong
            return True
        raise
    with response:
        resumed = bool(offset) and response.status == 206 and _range_start(response) == offset
        if response.status == 206 and not resumed:
            part.unlink(missing_ok=True)
            raise _ShortTransfer("the server answered with another range than asked for; starting over")
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None and length.isdigit() else None
        total = offset + expected if expected is not None else entry.size
        progress.start(f"{entry.path}{' (resumed)' if resumed else ''}", total, offset)
        received = 0
        with open(part, "ab" if resumed else "wb") as handle:
            try:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    received += len(chunk)
                    progress.advance(len(chunk))
            finally:
                handle.flush()
                os.fsync(handle.fileno())
        if expected is not None and received < expected:
            raise _ShortTransfer(f"the connection closed after {offset + received:,} of {offset + expected:,} bytes")
    return resumed


def _range_start(response) -> int | None:
    value = response.headers.get("Content-Range", "")  # "bytes START-END/TOTAL"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def download_file(files: DatasetFiles, entry: FileEntry, directory: Path, *, mirror: str | None = None,
                  retries: int = 3, timeout: float = 60.0, progress: Progress | None = None) -> FetchResult:
    """Download one official file into `directory`, resuming a partial download, verified, renamed
    into place atomically. DataError when no location gives the official bytes."""
    progress = progress or _Silent()
    target = directory / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    urls = _urls(files, entry, mirror)
    if not urls:
        raise DataError(f"{entry.path} has no download location")
    errors: list[str] = []
    with FileLock(directory / LOCK_NAME):  # one fetch at a time per dataset directory
        if target.is_file() and file_problem(target, entry) is None:
            return FetchResult(target, "present")
        resumed_any = False
        for url in urls:
            transferred = False
            for attempt in range(retries + 1):
                try:
                    resumed_any |= _transfer(url, part, entry, timeout, progress)
                    transferred = True
                    break
                except urllib.error.HTTPError as error:
                    errors.append(f"{url}: HTTP {error.code} {error.reason}")
                    break
                except (urllib.error.URLError, HTTPException, OSError, _ShortTransfer) as error:
                    errors.append(f"{url}: {getattr(error, 'reason', error)}")
                    if attempt < retries:
                        time.sleep(min(0.2 * 2**attempt, 5.0))
            if not transferred or not part.exists():
                continue  # next location, resuming from what arrived
            problem = file_problem(part, entry)
            if problem is None:
                os.replace(part, target)
                _fsync_directory(target.parent)
                progress.finish()
                return FetchResult(target, "resumed" if resumed_any else "downloaded")
            if entry.size is None or part.stat().st_size >= entry.size:
                part.unlink()  # whole but wrong: start afresh at the next location
                errors.append(f"{url}: the download does not match the official checksum: {problem}")
            else:
                errors.append(f"{url}: the transfer stopped after {part.stat().st_size:,} of {entry.size:,} bytes")
        progress.finish()
    kept = f"; {part.stat().st_size:,} bytes are kept in {part} and the next fetch resumes from there" \
        if part.exists() else ""
    raise DataError(f"could not download {entry.path} for {files.title} into {directory}: "
                    + "; ".join(errors[-6:]) + kept)


def fetch(name: str, root: str | os.PathLike | None = None, *, registry: Mapping[str, DatasetFiles] | None = None,
          mirror: str | None = None, retries: int = 3, timeout: float = 60.0,
          progress: Progress | None = None) -> list[FetchResult]:
    """Make dataset `name` present and verified under the data root: download every part that has
    no verified form yet (the part's first form, e.g. the .gz or the .tar.gz)."""
    files = dataset_files(name, registry)
    base = data_root(root)
    status = dataset_status(files.name, base, registry)
    results = []
    for part in status.parts:
        if part.form is not None:
            results.extend(FetchResult(p, "present") for p in part.paths)
            continue
        for entry in part.part.download.files:
            results.append(download_file(files, entry, status.directory, mirror=mirror, retries=retries,
                                         timeout=timeout, progress=progress))
    final = dataset_status(files.name, base, registry)
    if not final.ok:
        raise DataError("\n".join(final.problems))
    return results


@dataclass(frozen=True)
class DatasetRow:
    name: str
    title: str
    state: str     # "ok", "missing", "incomplete", "corrupt"
    forms: str     # the forms in use, e.g. "gzip"
    directory: Path
    problems: tuple[str, ...]


def list_datasets(root: str | os.PathLike | None = None,
                  registry: Mapping[str, DatasetFiles] | None = None) -> list[DatasetRow]:
    """Every file-based dataset with whether its files are present and verified under the root."""
    from ntklab.data.files import REGISTRY

    table = REGISTRY if registry is None else registry
    rows = []
    for name in table:
        status = dataset_status(name, root, table)
        usable = [p for p in status.parts if p.form is not None]
        problems = tuple(status.problems)
        if not problems:
            state = "ok"
        elif any("corrupt" in p for p in problems):
            state = "corrupt"
        elif usable:
            state = "incomplete"
        else:
            state = "missing"
        forms = ", ".join(dict.fromkeys(p.form.label for p in usable))
        rows.append(DatasetRow(name, status.files.title, state, forms, status.directory, problems))
    return rows
