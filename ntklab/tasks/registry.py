"""The task kinds a spec can name, discriminated by `task`."""

from collections.abc import Callable
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field, TypeAdapter

from ntklab.tasks import eigen, kernel, kernel_analysis, kernel_error, krr, nads, probe, ridge_cg, train
from ntklab.tasks import train_references  # noqa: F401  (completes TrainRunConfig's data and alignment types)
from ntklab.tasks.context import RunContext

RunConfig = Annotated[
    Union[
        train.TrainRunConfig,
        probe.ProbeRunConfig,
        kernel.KernelRunConfig,
        krr.KRRRunConfig,
        ridge_cg.RidgeCGRunConfig,
        kernel_error.KernelErrorRunConfig,
        eigen.EigenRunConfig,
        kernel_analysis.KernelAnalysisRunConfig,
        nads.NADsRunConfig,
    ],
    Field(discriminator="task"),
]
RUN_CONFIG = TypeAdapter(RunConfig)

_TASKS = {
    "train": (train.TrainRunConfig, train),
    "probe": (probe.ProbeRunConfig, probe),
    "kernel": (kernel.KernelRunConfig, kernel),
    "krr": (krr.KRRRunConfig, krr),
    "ridge_cg": (ridge_cg.RidgeCGRunConfig, ridge_cg),
    "kernel_error": (kernel_error.KernelErrorRunConfig, kernel_error),
    "eigen": (eigen.EigenRunConfig, eigen),
    "kernel_analysis": (kernel_analysis.KernelAnalysisRunConfig, kernel_analysis),
    "nads": (nads.NADsRunConfig, nads),
}


def task_names() -> list[str]:
    return list(_TASKS)


def config_class(task: str) -> type[BaseModel] | None:
    """The model a task's run config validates to, or None for an unknown task."""
    entry = _TASKS.get(task)
    return entry[0] if entry else None


def task_fields(task: str) -> frozenset[str] | None:
    """The top-level keys a task's config accepts, or None for an unknown task."""
    model = config_class(task)
    return frozenset(model.model_fields) if model else None


def run_function(task: str) -> Callable[[Any, RunContext], None]:
    return _TASKS[task][1].run


def help_function(task: str) -> Callable[[Any, RunContext, Any], None]:
    """The task's `help` hook: compute work items of a run another worker executes."""
    return _TASKS[task][1].help


def split_function(task: str) -> Callable[[Any], bool]:
    """The task's `splits` hook: whether a run of this config splits into work items for sure."""
    return _TASKS[task][1].splits


def helping_tasks() -> list[str]:
    """The tasks whose runs can split into work items (their modules define `help` and `splits`)."""
    return [name for name, (_, module) in _TASKS.items() if hasattr(module, "help")]


def upstream_configs(config: BaseModel) -> dict[str, BaseModel]:
    """The named configs of the runs `config` needs first (the `upstream_runs` hook), if any."""
    hook = getattr(type(config), "upstream_runs", None)  # on the class: a model's missing attribute costs ~5 us
    return dict(hook(config)) if hook is not None else {}


def input_problems(config: BaseModel) -> list[str]:
    """Problems with inputs outside the spec (the task module's `check_inputs` hook), if any."""
    hook = getattr(_TASKS[config.task][1], "check_inputs", None)
    return list(hook(config)) if hook is not None else []
