"""The task kinds a spec can name, discriminated by `task`."""

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from ntklab.tasks import probe, train
from ntklab.tasks.context import RunContext

RunConfig = Annotated[Union[train.TrainRunConfig, probe.ProbeRunConfig], Field(discriminator="task")]
RUN_CONFIG = TypeAdapter(RunConfig)

_TASKS = {"train": (train.TrainRunConfig, train), "probe": (probe.ProbeRunConfig, probe)}


def task_names() -> list[str]:
    return list(_TASKS)


def task_fields(task: str) -> frozenset[str] | None:
    """The top-level keys a task's config accepts, or None for an unknown task."""
    entry = _TASKS.get(task)
    return frozenset(entry[0].model_fields) if entry else None


def run_function(task: str) -> Callable[[Any, RunContext], None]:
    return _TASKS[task][1].run
