"""The `kernel_error` task: how far one kernel is from a reference kernel on the same data.

Both kernels are upstream `kernel` runs (reused by identity): typically the empirical NTK of a
finite network against the analytic NTK of its infinite-width limit. Metrics (step 0), for
K(train, train) and, when both have it, K(test, train):

    rel_error        |scale K - R|_F / |R|_F
    rel_error_max    max |scale K - R| / max |R|

A kernel with full output blocks (m rows per example) is compared with R (x) I_m when the
reference is scalar (the analytic kernel is the same for every output, the cross-output blocks
vanish in the limit). `scale` multiplies the kernel first (1/m for a kernel traced over m outputs).
"""

from typing import Literal

from pydantic import Field, PositiveFloat

from ntklab.configbase import StrictModel
from ntklab.tasks.context import RunContext
from ntklab.tasks.kernel import KernelRunConfig


class KernelErrorRunConfig(StrictModel):
    task: Literal["kernel_error"]
    kernel: KernelRunConfig = Field(description="the kernel run measured (an upstream run)")
    reference: KernelRunConfig = Field(description="the reference kernel run (an upstream run)")
    scale: PositiveFloat = Field(1.0, description="multiplies the measured kernel (1/m for a kernel traced over m outputs)")

    def upstream_runs(self) -> dict[str, KernelRunConfig]:
        return {"kernel": self.kernel, "reference": self.reference}


def relative_errors(kernel, reference, outputs: int, reference_outputs: int, scale: float) -> dict[str, float]:
    import numpy as np

    kernel = scale * np.asarray(kernel, np.float64)
    reference = np.asarray(reference, np.float64)
    if outputs != reference_outputs:
        if reference_outputs != 1:
            raise ValueError(f"cannot compare a kernel of {outputs} outputs with one of {reference_outputs}")
        reference = np.kron(reference, np.eye(outputs))
    if kernel.shape != reference.shape:
        raise ValueError(f"the kernels have different shapes: {kernel.shape} and {reference.shape}")
    diff = kernel - reference
    return {
        "rel_error": float(np.linalg.norm(diff) / np.linalg.norm(reference)),
        "rel_error_max": float(np.max(np.abs(diff)) / np.max(np.abs(reference))),
    }


def run(config: KernelErrorRunConfig, ctx: RunContext) -> None:
    from ntklab.kernelstore import KernelStore

    stores = {name: KernelStore.open(ctx.upstream_artifact_dir(name, "kernel")) for name in ("kernel", "reference")}
    for name, store in stores.items():
        if not store.is_complete():
            raise ValueError(f"the {name} kernel store {store.path} is incomplete")
    kernel, reference = stores["kernel"], stores["reference"]
    if kernel.n_train != reference.n_train:
        raise ValueError(f"the kernels are on different data: {kernel.n_train} and {reference.n_train} examples")
    metrics = relative_errors(kernel.read_train(), reference.read_train(), kernel.outputs, reference.outputs,
                              config.scale)  # fmt: skip
    if kernel.n_test and kernel.n_test == reference.n_test:
        test = relative_errors(kernel.read_test(), reference.read_test(), kernel.outputs, reference.outputs,
                               config.scale)  # fmt: skip
        metrics.update({f"test_{name}": value for name, value in test.items()})
    ctx.log_metrics(0, metrics)
