"""The `executor:` block of a spec: where `ntklab run` sends the workers that execute its runs.

It is about where and how runs execute, never what they compute, so it is no part of any run's
identity (runs are identified by their own configs; this block lives beside the groups). Every
key can be overridden on the command line (`ntklab run --executor slurm --workers 64 ...`).
"""

from typing import Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from ntklab.configbase import StrictModel


class SlurmParameters(StrictModel):
    """What each job of the array asks Slurm for (sbatch's options of the same names)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time_minutes: PositiveInt = Field(60, description="the wall-clock limit of each job (--time)")
    cpus_per_task: PositiveInt = 1
    mem_gb: PositiveFloat | None = None
    gpus_per_task: NonNegativeInt | None = None
    setup: list[str] = Field(default_factory=list, description="shell lines run before each worker, e.g. module load")
    array_parallelism: PositiveInt | None = Field(None, description="at most this many jobs of the array at once")
    signal_delay_s: PositiveInt = Field(
        120, description="Slurm signals a job this long before its time limit: the run checkpoints and the job requeues")
    max_requeues: NonNegativeInt = Field(3, description="how many times a job that hit its time limit is requeued")
    sbatch: dict[str, str] = Field(default_factory=dict, description="other sbatch options, e.g. {constraint: a100}")


class ExecutorConfig(StrictModel):
    kind: Literal["local", "slurm"] = "local"
    workers: PositiveInt = 1
    devices: list[str] | None = Field(
        None, description="accelerators (CUDA_VISIBLE_DEVICES values) for local workers, one each in turn")
    slurm: SlurmParameters = Field(default_factory=SlurmParameters)
