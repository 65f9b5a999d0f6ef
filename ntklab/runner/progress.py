"""Progress display: rich bars on a terminal, plain throttled lines otherwise (batch logs).

The line of a finished run ends with its headline metrics (ntklab/headline.py)."""

import sys
import time
from collections.abc import Mapping
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ntklab.headline import headline_text

PLAIN_INTERVAL_SECONDS = 15.0


class Reporter(Protocol):
    def start(self, total: int) -> None: ...
    def run_started(self, label: str, resumed_from: int | None) -> None: ...
    def run_progress(self, step: int, total: int) -> None: ...
    def run_finished(self, label: str, status: str, seconds: float, note: str,
                     headline: Mapping[str, float | None] | None = None) -> None: ...
    def close(self) -> None: ...


def finished_line(label: str, status: str, seconds: float, note: str,
                  headline: Mapping[str, float | None] | None) -> str:
    """`3ae0... mlp: done in 8.5s  test_accuracy 0.9722  test_loss 0.0913` (and the note, if any)."""
    line = f"{label}: {status} in {seconds:.1f}s{': ' + note if note else ''}"
    return f"{line}  {headline_text(headline)}" if headline else line


class RichReporter:
    def __init__(self, console: Console):
        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TimeRemainingColumn(), console=console, transient=False,
        )
        self._sweep = None
        self._steps = None
        self._console = console

    def start(self, total: int) -> None:
        self._progress.start()
        self._sweep = self._progress.add_task("runs", total=total)

    def run_started(self, label: str, resumed_from: int | None) -> None:
        suffix = f" (resuming at step {resumed_from})" if resumed_from is not None else ""
        if self._steps is not None:
            self._progress.remove_task(self._steps)
        self._steps = self._progress.add_task(f"  {label}{suffix}", total=None)

    def run_progress(self, step: int, total: int) -> None:
        if self._steps is not None:
            self._progress.update(self._steps, completed=step, total=total)

    def run_finished(self, label: str, status: str, seconds: float, note: str,
                     headline: Mapping[str, float | None] | None = None) -> None:
        self._progress.console.print(finished_line(label, status, seconds, note, headline), markup=False,
                                     highlight=False)
        self._progress.advance(self._sweep)

    def close(self) -> None:
        if self._steps is not None:
            self._progress.remove_task(self._steps)
        self._progress.stop()


class PlainReporter:
    """One line per event and at most one progress line per interval, for logs and pipes."""

    def __init__(self, stream=None, interval: float = PLAIN_INTERVAL_SECONDS):
        self._stream = stream or sys.stderr
        self._interval = interval
        self._total = 0
        self._done = 0
        self._last = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def start(self, total: int) -> None:
        self._total = total
        self._print(f"{total} runs to execute")

    def run_started(self, label: str, resumed_from: int | None) -> None:
        self._last = time.monotonic()
        resumed = f", resuming at step {resumed_from}" if resumed_from is not None else ""
        self._print(f"[{self._done + 1}/{self._total}] {label} started{resumed}")

    def run_progress(self, step: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._print(f"    step {step}/{total}")

    def run_finished(self, label: str, status: str, seconds: float, note: str,
                     headline: Mapping[str, float | None] | None = None) -> None:
        self._done += 1
        self._print(f"[{self._done}/{self._total}] {finished_line(label, status, seconds, note, headline)}")

    def close(self) -> None:
        pass


def make_reporter(console: Console) -> Reporter:
    return RichReporter(console) if console.is_terminal else PlainReporter(console.file)
