"""Kernel configs, discriminated by `kind`. Pydantic only: importing this module does not import JAX.

A kernel config says which kernel function k(x, x') to evaluate; the `kernel` task
(ntklab/tasks/kernel.py) evaluates it on a dataset, block by block, and `ntklab.engine.kernels`
turns a config into a block function. A new kind adds its config class to `KernelConfig` and one
builder to `ntklab.engine.kernels.KERNEL_BUILDERS`. The configs live with the tasks because an
empirical kernel may be taken at the end of a train run (`at`, a `TrainRunConfig`).
"""

from typing import Annotated, Literal, Union

from pydantic import Field, PositiveInt, model_validator

from ntklab.configbase import Seed, StrictModel, non_semantic
from ntklab.engine.config import ComputeDtype, Implementation, ModelConfig
from ntklab.engine.plan import kernel_problem
from ntklab.engine.presets import plan_of
from ntklab.tasks.train import TrainRunConfig

Scaling = Literal["none", "1/sqrt(P)"]


class EmpiricalKernel(StrictModel):
    """The empirical NTK Θ(x, x') = J(x) J(x')ᵀ of a finite network, J the Jacobian of the logits
    with respect to the trainable parameters.

    At initialization (drawn from the kernel run's `seed`) or, with `at`, at the parameters a
    training run ended with (its `params` artifact; the training run is an upstream run, run first
    or reused by identity). With `trace_outputs` the kernel is Σ_o Θ_oo (n x n'); otherwise the full
    output blocks (n·m x n'·m, sample-major: row = sample·m + output). BatchNorm layers run in
    evaluation mode with their running statistics frozen.
    """

    kind: Literal["empirical"]
    model: ModelConfig | None = Field(
        None, description="the architecture; optional with `at` (then it is the training run's model)"
    )
    at: TrainRunConfig | None = Field(
        None, description="a train run whose final parameters (artifact `params`) the kernel is taken at; "
        "unset: at initialization from the kernel run's seed"
    )
    implementation: Implementation = Field(
        "auto",
        description="jacobian (per-example Jacobians, contracted per parameter tensor), ntvp (NTK-vector "
        "products, no Jacobian stored), structured (layer-wise contractions that exploit the structure of "
        "dense and convolutional layers), auto (the cheapest by estimated FLOPs within memory)",
    )
    trace_outputs: bool = Field(False, description="sum the diagonal output blocks: an n x n' kernel")
    dtype: ComputeDtype = Field("float32", description="compute precision (parameters are cast on a copy)")
    scaling: Scaling = Field("none", description="1/sqrt(P) divides by the root of the parameter count (ntkgen)")

    @model_validator(mode="after")
    def _one_model(self) -> "EmpiricalKernel":
        if self.at is None and self.model is None:
            raise ValueError("an empirical kernel needs `model` (at initialization) or `at` (a train run)")
        if self.at is not None and self.model is not None and self.model != self.at.model:
            raise ValueError("`model` differs from the model of the train run in `at`; leave `model` out")
        return self

    def network(self) -> ModelConfig:
        """The architecture the kernel is the NTK of."""
        return self.model if self.model is not None else self.at.model


class AnalyticKernel(StrictModel):
    """The infinite-width NNGP or NTK of a network (ntklab/engine/analytic.py): the limit of the
    model `model` builds, in its parameterization, with the widths of `model` entering only the
    standard and taylor parameterizations' NTK. A scalar kernel (n x n'), the same for every output."""

    kind: Literal["analytic"]
    model: ModelConfig
    which: Literal["nngp", "ntk"] = "ntk"
    dtype: ComputeDtype = Field("float64", description="compute precision")
    tile: PositiveInt | None = non_semantic(None, "pairs per side of a compute tile (default: from the cache size)")

    @model_validator(mode="after")
    def _has_a_limit(self) -> "AnalyticKernel":
        problem = kernel_problem(plan_of(self.model).ops)
        if problem:
            raise ValueError(f"no analytic kernel for this {self.model.arch} model: {problem}")
        return self


class ClosedFormKernel(StrictModel):
    """Ghorbani et al.'s closed forms (ntklab/engine/closed_form.py): `ntk2`, the two-layer ReLU
    NTK; `rf2`, the degree-1 arc-cosine (random-features) kernel; `polynomial`, (c + <x, z>/sqrt(d))^degree."""

    kind: Literal["closed_form"]
    which: Literal["ntk2", "rf2", "polynomial"]
    degree: PositiveInt = Field(2, description="polynomial only")
    c: float = Field(1.0, description="polynomial only: the constant")

    @model_validator(mode="after")
    def _polynomial_fields(self) -> "ClosedFormKernel":
        # By value, not by which keys were given: a stored config (every default written out) must
        # validate again when a worker reads it back from the database.
        defaults = {name: type(self).model_fields[name].default for name in ("degree", "c")}
        if self.which != "polynomial" and {"degree": self.degree, "c": self.c} != defaults:
            raise ValueError("degree and c are parameters of the polynomial kernel only")
        return self


class RandomFeaturesKernel(StrictModel):
    """The Gram matrix of N random features act(<w, x>), w ~ N(0, I/d) (ntklab/engine/random_features.py),
    divided by N unless `normalize` is false (Ghorbani's RF_Kernel_Gen), plus 1 with `intercept`.
    Seeded; the features do not depend on N or the chunk size, and the Gram accumulates in float64."""

    kind: Literal["random_features"]
    features: PositiveInt
    activation: Literal["relu", "erf"] = "relu"
    intercept: bool = False
    normalize: bool = True
    seed: Seed = 0
    dtype: ComputeDtype = Field("float32", description="precision of the features and their products")
    chunk: PositiveInt = non_semantic(16384, "features drawn and added per compiled call")


KernelConfig = Annotated[
    Union[EmpiricalKernel, AnalyticKernel, ClosedFormKernel, RandomFeaturesKernel], Field(discriminator="kind")
]
