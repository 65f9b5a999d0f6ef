"""What a task sees of the runner: the run context protocol and the outcomes a task may signal.

A task module defines its config model and `run(config, ctx) -> None`. It logs metrics and
artifacts through `ctx`, checkpoints through `ctx`, and never opens a database session or prints.

Optional hooks:
- a config may define `upstream_runs(self) -> dict[str, BaseModel]`: named configs of other runs
  whose results it needs. The runner runs them first (or reuses them when done, by identity) and
  the task reads their artifacts with `ctx.upstream_artifact(name, artifact)`;
- a task module may define `check_inputs(config) -> list[str]`: problems with inputs that exist
  outside the spec (missing or corrupt dataset files). The runner calls it for every planned run
  before any run starts, and refuses the spec when a problem is reported;
- a task module whose runs split into work items (`ctx.work_items`) defines
  `help(config, ctx, items)`: what a worker that does not execute the run does to compute some
  of its items (`items`: its claims on them), and `splits(config) -> bool`: whether a run splits
  whatever its size, so that helpers start building as soon as it starts.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
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

    def work_items(self, names: Sequence[str], done: Collection[str] = ()) -> Any:
        """Split the run into items that any worker may compute (ntklab/runner/item_claims.py): the
        names are recorded once, in order (`done`: complete already), and the returned claims
        (a context manager) take them one at a time. Other workers compute items of the run
        through the task module's `help(config, ctx, items)` hook."""

    def artifact_dir(self, name: str) -> Path:
        """A directory for a large artifact written piece by piece (an out-of-core kernel). It is
        the same directory on every attempt of the run, so a resumed run finds what it wrote."""

    def record_artifact_dir(self, name: str, kind: str, metadata: Mapping[str, Any] | None = None) -> None:
        """Record the finished directory `artifact_dir(name)` as an artifact of the run."""

    def upstream_artifact(self, name: str, artifact: str) -> bytes:
        """The bytes of artifact `artifact` of the upstream run `name` (see `upstream_runs`)."""

    def upstream_artifact_dir(self, name: str, artifact: str) -> Path:
        """The directory of the directory artifact `artifact` of the upstream run `name`."""

    def cached(self, namespace: str, key: str, compute: Callable[[], bytes]) -> bytes:
        """Bytes stored under (namespace, key) in the home's cache, computed once by whichever run
        needs them first (derived datasets, shared intermediate arrays). `key` must identify the
        content, e.g. the identity hash of the config that produces it."""
