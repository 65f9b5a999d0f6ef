"""What a task sees of the runner: the run context protocol and the outcomes a task may signal.

A task is a function `run(config, ctx) -> None`. It logs metrics and artifacts through `ctx`,
checkpoints through `ctx`, and never opens a database session or prints.
"""

from collections.abc import Mapping
from typing import Any, Protocol


class RunInterrupted(Exception):
    """Raised by a task that stopped because `ctx.should_stop()` said so, after checkpointing."""


class RunDiverged(Exception):
    """Raised by a task whose loss became NaN or infinite; the metrics logged so far are kept."""

    def __init__(self, step: int, message: str):
        super().__init__(message)
        self.step = step


class RunContext(Protocol):
    run_key: str

    def log_metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Record metric values at a step. Non-finite values are recorded as missing (NULL)."""

    def save_artifact(self, name: str, data: bytes, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Store bytes in the content-addressed artifact store under a name unique within the run."""

    def load_checkpoint(self) -> bytes | None:
        """The payload of the latest checkpoint of this run, or None when the run starts fresh."""

    def save_checkpoint(self, step: int, payload: bytes) -> None:
        """Flush pending metrics, then atomically replace the run's checkpoint with `payload`."""

    def progress(self, step: int, total: int) -> None:
        """Report progress (steps done out of total) for progress bars and `ntklab status`."""

    def should_stop(self) -> bool:
        """True once the process was asked to stop (SIGINT/SIGTERM): checkpoint and raise RunInterrupted."""
