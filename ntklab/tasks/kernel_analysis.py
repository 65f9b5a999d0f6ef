"""The `kernel_analysis` task: log-determinants of a stored kernel, out of core.

The kernel is an upstream `kernel` run (reused by identity); its zarr store is read one block at
a time, never whole (ntklab/engine/logdet.py has the algorithms and their costs). Analyses, each
a metric at step 0, of K = K(train, train) with n·r rows (r rows per example); `ridge` is added to
the diagonal of the matrix each one factors (K, its diagonal blocks, the pseudo-NTK):

    logdet                 exact, by a tiled Cholesky (memory: four blocks of (B·r)² floats;
                           disk: a float64 factor file of (n·r)² entries of which only the lower
                           blocks are written, a sparse file on most filesystems; removed at the end)
    logdet_slq             stochastic Lanczos quadrature estimate, with logdet_slq_stderr
    logdet_block_diagonal  Σ over examples of log det of its r × r diagonal block
    logdet_pseudo_ntk      log det of the n × n pseudo-NTK (block sums / r), by the tiled Cholesky

`logdet_per_row` is logdet / (n·r), comparable across subsample sizes. The tiled Cholesky
checkpoints after each block column, so a killed analysis of a large kernel resumes where it was.
"""

import json
from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator

from ntklab.configbase import StrictModel
from ntklab.tasks.context import RunContext, RunInterrupted
from ntklab.tasks.kernel import KernelRunConfig

Analysis = Literal["logdet", "slq", "block_diagonal", "pseudo_ntk"]


class SLQConfig(StrictModel):
    probes: PositiveInt = Field(30, description="Rademacher probes (the standard error falls as 1/sqrt(probes))")
    steps: PositiveInt = Field(30, description="Lanczos steps per probe")
    seed: int = Field(0, description="seeds the probes")


class KernelAnalysisRunConfig(StrictModel):
    task: Literal["kernel_analysis"]
    kernel: KernelRunConfig = Field(description="the kernel run analysed (an upstream run)")
    analyses: list[Analysis] = Field(
        default_factory=lambda: ["logdet", "block_diagonal", "pseudo_ntk"],
        description="which of logdet, slq, block_diagonal, pseudo_ntk to compute",
    )
    ridge: NonNegativeFloat = Field(
        0.0, description="added to the diagonal of each matrix analysed (an empirical NTK with more rows than "
        "parameters is singular)")
    slq: SLQConfig = Field(default_factory=SLQConfig, description="settings of the `slq` estimate")

    @field_validator("analyses")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one analysis")
        if len(set(value)) != len(value):
            raise ValueError("an analysis is named twice")
        return value

    def upstream_runs(self) -> dict[str, KernelRunConfig]:
        return {"kernel": self.kernel}


def run(config: KernelAnalysisRunConfig, ctx: RunContext) -> None:
    import shutil

    import numpy as np

    from ntklab.engine.logdet import (
        Tiling,
        block_diagonal_logdet,
        cholesky_logdet,
        pseudo_tiles,
        slq_logdet,
        tiled_matmul,
    )
    from ntklab.kernelstore import KernelStore

    store = KernelStore.open(ctx.upstream_artifact_dir("kernel", "kernel"))
    if not store.is_complete():
        raise ValueError(f"the kernel store {store.path} is incomplete")
    r = store.outputs
    tiling = Tiling(store.n_train * r, store.block_size * r)
    read_tile = store.train_block
    saved = ctx.load_checkpoint()
    # What is finished (metrics by analysis) and, for a tiled Cholesky under way, its next column.
    state = json.loads(saved) if saved else {"done": {}, "cholesky": None, "checkpoints": 0}

    def checkpoint() -> None:
        state["checkpoints"] += 1
        ctx.save_checkpoint(state["checkpoints"], json.dumps(state).encode())

    def cholesky(name: str, reader, tiles: Tiling) -> float:
        directory = ctx.artifact_dir(f"factor_{name}")
        path = directory / "factor.npy"
        resume = state["cholesky"] if state["cholesky"] and state["cholesky"]["analysis"] == name else None
        if resume and not path.exists():
            resume = None
        factor = np.lib.format.open_memmap(path, mode="r+" if resume else "w+", dtype=np.float64,
                                           shape=(tiles.size, tiles.size))

        def finished_column(j: int, logdet: float) -> None:
            state["cholesky"] = {"analysis": name, "next": j + 1, "logdet": logdet}
            checkpoint()
            if ctx.should_stop() and j + 1 < tiles.count:
                raise RunInterrupted(f"stopped in {name} after block column {j + 1} of {tiles.count}")

        value = cholesky_logdet(reader, tiles, factor, ridge=config.ridge, start=resume["next"] if resume else 0,
                                logdet_before=resume["logdet"] if resume else 0.0, on_column=finished_column)
        del factor
        shutil.rmtree(directory)
        return value

    def analyse(analysis: str) -> dict[str, float]:
        if analysis == "logdet":
            value = cholesky("logdet", read_tile, tiling)
            return {"logdet": value, "logdet_per_row": value / tiling.size}
        if analysis == "pseudo_ntk":
            return {"logdet_pseudo_ntk": cholesky("pseudo_ntk", *pseudo_tiles(read_tile, tiling, r))}
        if analysis == "block_diagonal":
            return {"logdet_block_diagonal": block_diagonal_logdet(read_tile, tiling, r, ridge=config.ridge)}
        estimate = slq_logdet(lambda v: tiled_matmul(read_tile, tiling, v), tiling.size, probes=config.slq.probes,
                              steps=config.slq.steps, seed=config.slq.seed, ridge=config.ridge)
        return {"logdet_slq": estimate.logdet, "logdet_slq_stderr": estimate.stderr,
                "slq_steps": float(estimate.steps)}

    for analysis in config.analyses:
        ctx.progress(len(state["done"]), len(config.analyses))
        if analysis not in state["done"]:
            state["done"][analysis] = analyse(analysis)
            state["cholesky"] = None
            checkpoint()
    ctx.progress(len(config.analyses), len(config.analyses))
    values = {"rows": float(tiling.size)}
    for analysis in config.analyses:
        values.update(state["done"][analysis])
    ctx.log_metrics(0, values)
