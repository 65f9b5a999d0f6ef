"""The `probe` task: exercises the runner and database without a model.

It logs a deterministic metric series, checkpoints, and can fail, diverge or stall on purpose.
Run a probe spec to check a database or cluster set-up end to end before a long sweep.
"""

import json
import math
import time
from typing import Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveInt

from ntklab.configbase import Seed, StrictModel, non_semantic
from ntklab.tasks.context import RunContext, RunDiverged, RunInterrupted


class ProbeRunConfig(StrictModel):
    task: Literal["probe"]
    seed: Seed = 0
    steps: PositiveInt = 10
    metrics_per_step: PositiveInt = Field(1, description="how many metric series to log")
    fail_at_step: NonNegativeInt | None = Field(None, description="raise an error at this step")
    diverge_at_step: NonNegativeInt | None = Field(None, description="log a NaN loss at this step")
    artifact_bytes: NonNegativeInt = Field(0, description="size of the artifact written at the end")
    directory_files: NonNegativeInt = Field(0, description="files of the directory artifact written at the end")
    needs: "ProbeRunConfig | None" = Field(
        None, description="another probe run, run first; its artifact is read back and checked"
    )
    step_seconds: NonNegativeFloat = non_semantic(0.0, "sleep this long per step")
    checkpoint_every_steps: PositiveInt = non_semantic(5, "checkpoint interval in steps")

    def upstream_runs(self) -> dict[str, "ProbeRunConfig"]:
        return {"needs": self.needs} if self.needs is not None else {}


def probe_value(seed: int, step: int, series: int) -> float:
    """The deterministic value of series `series` at `step`."""
    return 1.0 / (1.0 + step) + 0.001 * seed + series


def probe_artifact(config: ProbeRunConfig) -> bytes:
    return bytes((config.seed + i) % 256 for i in range(config.artifact_bytes))


def run(config: ProbeRunConfig, ctx: RunContext) -> None:
    if config.needs is not None:
        if config.needs.artifact_bytes:
            received = ctx.upstream_artifact("needs", "probe")
            if received != probe_artifact(config.needs):
                raise ValueError("the upstream probe artifact differs from what its config produces")
        if config.needs.directory_files:
            listed = sorted(p.name for p in ctx.upstream_artifact_dir("needs", "blocks").iterdir())
            if listed != [f"block{i}" for i in range(config.needs.directory_files)]:
                raise ValueError(f"the upstream probe directory holds {listed}")
    saved = ctx.load_checkpoint()
    start = json.loads(saved)["step"] if saved else 0
    for step in range(start, config.steps):
        if config.fail_at_step == step:
            raise RuntimeError(f"probe failure requested at step {step}")
        if config.step_seconds:
            time.sleep(config.step_seconds)
        values = {f"loss{i}" if i else "loss": probe_value(config.seed, step, i) for i in range(config.metrics_per_step)}
        if config.diverge_at_step == step:
            values["loss"] = math.nan
            ctx.log_metrics(step, values)
            raise RunDiverged(step, f"loss is NaN at step {step}")
        ctx.log_metrics(step, values)
        done = step + 1
        ctx.progress(done, config.steps)
        if done < config.steps and (done % config.checkpoint_every_steps == 0 or ctx.should_stop()):
            ctx.save_checkpoint(done, json.dumps({"step": done}).encode())
            if ctx.should_stop():
                raise RunInterrupted(f"stopped after step {done}")
    if config.artifact_bytes:
        ctx.save_artifact("probe", probe_artifact(config), kind="bytes", metadata={"bytes": config.artifact_bytes})
    if config.directory_files:
        directory = ctx.artifact_dir("blocks")
        for i in range(config.directory_files):
            (directory / f"block{i}").write_bytes(probe_artifact(config))
        ctx.record_artifact_dir("blocks", kind="directory", metadata={"files": config.directory_files})
