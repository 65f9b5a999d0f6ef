"""Datasets derived from upstream runs, which a `train` run may name as its `data`: the dataset
configs of the data layer (ntklab/data/config.py) plus

- `ntk_eigenfunction`: the inputs of an eigen run's kernel, labelled by the sign of its
  eigenvector `index` (ntklab/data/eigenfunction.py; Ortiz-Jiménez et al. 2021);
- `nad_separable`: a linearly separable dataset along NAD `index` of a nads run
  (ntklab/data/nad_separable.py).

A derived dataset names the run it derives from as its upstream run `data` and builds its arrays
from that run's artifacts (`load(ctx)`). `TrainRunConfig.data` refers to the union `TrainData` by
name (ntklab/tasks/train_references.py resolves it): the derived datasets nest task configs (an
eigen run holds a kernel run, which may be taken at the end of a train run).
"""

import typing
from typing import Annotated, Literal, Union

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from ntklab.configbase import StrictModel
from ntklab.data.config import DataConfig
from ntklab.tasks.context import RunContext
from ntklab.tasks.eigen import EigenRunConfig
from ntklab.tasks.nads import NADsRunConfig


class NTKEigenfunctionData(StrictModel):
    """Binary labels (sign(v_ℓ,i) + 1) // 2 of eigenvector ℓ = `index` of an eigen run over a kernel
    with `points: train+test`; the inputs are the kernel's, the training and test labels the two
    slices of v_ℓ (Ortiz-Jiménez et al. 2021). The kernel must have one output per point."""

    dataset: Literal["ntk_eigenfunction"]
    eigen: EigenRunConfig = Field(description="the eigendecomposition (an upstream run, `data`)")
    index: NonNegativeInt = Field(description="the eigenvector ℓ, 0 the largest eigenvalue's")

    @model_validator(mode="after")
    def _fits_the_eigen_run(self) -> "NTKEigenfunctionData":
        kernel = self.eigen.kernel
        if kernel.points != "train+test":
            raise ValueError("an eigenfunction task needs the eigenvectors of a kernel with points: train+test")
        if self.eigen.k is not None and self.index >= self.eigen.k:
            raise ValueError(f"index {self.index} is not among the eigen run's k = {self.eigen.k} eigenvectors")
        if kernel.kernel.kind == "empirical" and not kernel.kernel.trace_outputs and kernel.outputs != 1 \
                and kernel.kernel.at is None:
            raise ValueError("an eigenfunction task needs a scalar kernel: set the kernel run's outputs: 1")
        return self

    def upstream_runs(self) -> dict[str, EigenRunConfig]:
        return {"data": self.eigen}

    def source(self) -> DataConfig:
        """The dataset whose inputs this one relabels."""
        return self.eigen.kernel.data

    def load(self, ctx: RunContext):
        import io

        import numpy as np

        from ntklab.data.eigenfunction import eigenfunction_labels, split_labels
        from ntklab.data.sources import Dataset, load_dataset

        base = load_dataset(self.source(), getattr(ctx, "cached", None))
        vectors = np.load(io.BytesIO(ctx.upstream_artifact("data", "eigenvectors")), mmap_mode=None)
        indices = np.load(io.BytesIO(ctx.upstream_artifact("data", "indices")))
        if vectors.shape[1] != len(indices):
            raise ValueError(f"the eigenvectors have {vectors.shape[1]} entries for {len(indices)} points: "
                             "an eigenfunction task needs a kernel with one output per point")
        labels = eigenfunction_labels(vectors[self.index])
        y_train, y_test = split_labels(labels, indices, len(base.x_train), len(base.x_test))
        return Dataset(base.x_train, y_train, base.x_test, y_test, num_classes=2)


class NADSeparableData(StrictModel):
    """x = (epsilon/2)·y·u + w with u = NAD `index` of a nads run, w ~ sigma·N(0, I) orthogonal to
    u, y = ±1 with probability 1/2 (labels 0/1); inputs of the nads run's shape. The seed's
    defaults: epsilon 1, sigma 1, 10,000 training and 10,000 test samples."""

    dataset: Literal["nad_separable"]
    nads: NADsRunConfig = Field(description="the NADs (an upstream run, `data`)")
    index: NonNegativeInt = Field(description="the NAD ℓ, 0 the largest singular value's")
    epsilon: PositiveFloat = Field(1.0, description="the margin between the classes along u")
    sigma: NonNegativeFloat = Field(1.0, description="the noise's standard deviation")
    n_train: PositiveInt = 10_000
    n_test: PositiveInt = 10_000
    seed: int = Field(42, description="seeds the labels and the noise")

    @model_validator(mode="after")
    def _index_exists(self) -> "NADSeparableData":
        kept = self.nads.k or self.nads.input_dimension() - 1
        if self.index >= kept:
            raise ValueError(f"index {self.index} is not among the nads run's {kept} NADs")
        return self

    def upstream_runs(self) -> dict[str, NADsRunConfig]:
        return {"data": self.nads}

    def source(self) -> None:
        return None

    def load(self, ctx: RunContext):
        import io

        import numpy as np

        from ntklab.data.nad_separable import nad_separable
        from ntklab.data.sources import Dataset

        nads = np.load(io.BytesIO(ctx.upstream_artifact("data", "nads")))
        arrays = nad_separable(nads[self.index], tuple(self.nads.shape), self.n_train, self.n_test, self.epsilon,
                               self.sigma, self.seed)
        return Dataset(*arrays, num_classes=2)


DERIVED_DATASETS = (NTKEigenfunctionData, NADSeparableData)
TrainData = Annotated[
    Union[typing.get_args(typing.get_args(DataConfig)[0]) + DERIVED_DATASETS],
    Field(discriminator="dataset"),
]
