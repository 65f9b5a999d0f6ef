"""Kernel alignment metrics of a `train` run (`alignment:`; the math in ntklab/engine/alignment.py).

With `eigen` (an upstream eigen run, `alignment`), after training: for each of the top `top`
eigenvectors v_i of that run (the kernel at initialization), a_i = v_iᵀ K_end v_i / ‖v_i‖² with
K_end the empirical NTK of the trained model (the network, or the expansion being trained),
computed matrix-free, on the kernel's training points, its test points and all of them: metrics
`alignment_train`, `alignment_test`, `alignment_all` at step = eigen index i (0 the largest), and
`alignment_gain` = a_i / λ_i on all points, how much the kernel grew along v_i (at
initialization a_i = λ_i).
With `every_eval`, the same at every evaluation step t as the artifact `alignment/step_{t}` (rows
train, test, all; one column per index) and the metric `alignment_peak_index` (argmax over i on
all points). After training on eigenfunction ℓ, a peak at i = ℓ says the kernel rotated toward
the target (Ortiz-Jiménez et al. 2021).

With `target_samples` n_s, at every evaluation step: `kernel_target_alignment`, yᵀKy / (‖K‖_F ‖y‖²)
on the first n_s training examples of the run, y = 2·label - 1 (one logit) or centred one-hot.
"""

import io

from pydantic import Field, PositiveInt

from ntklab.configbase import StrictModel, non_semantic
from ntklab.tasks.context import RunContext
from ntklab.tasks.eigen import EigenRunConfig

SPLITS = ("train", "test")


class AlignmentConfig(StrictModel):
    eigen: EigenRunConfig | None = Field(None, description="the eigenvectors to align with (an upstream run, `alignment`)")
    top: PositiveInt | None = Field(None, description="how many of the top eigenvectors (default: all of the eigen run's)")
    every_eval: bool = Field(False, description="also at every evaluation step (artifact alignment/step_{t})")
    target_samples: PositiveInt | None = Field(
        256, description="training examples of the kernel-target alignment at every evaluation step (unset: none)"
    )
    chunk: PositiveInt = non_semantic(32, "eigenvectors per batch of VJPs")
    batch_size: PositiveInt = non_semantic(256, "examples per VJP")

    def upstream_runs(self) -> dict[str, EigenRunConfig]:
        return {"alignment": self.eigen} if self.eigen is not None else {}

    def monitor(self, ctx: RunContext, dataset) -> "AlignmentMonitor":
        return AlignmentMonitor(self, ctx, dataset)


def alignment_artifact_name(step: int) -> str:
    return f"alignment/step_{step}"


class AlignmentMonitor:
    """The alignment metrics of one train run, given its context and dataset."""

    def __init__(self, config: AlignmentConfig, ctx: RunContext, dataset):
        import numpy as np

        self.config, self.ctx = config, ctx
        self.x_subset = dataset.x_train[: config.target_samples or 0]
        self.y_subset = dataset.y_train[: config.target_samples or 0]
        self.points: list[tuple[np.ndarray, np.ndarray]] = []  # per split: inputs, vectors (k, rows)
        if config.eigen is None:
            return
        from ntklab.data.sources import load_dataset

        vectors = np.load(io.BytesIO(ctx.upstream_artifact("alignment", "eigenvectors")))
        indices = np.load(io.BytesIO(ctx.upstream_artifact("alignment", "indices")))
        vectors = vectors[: config.top] if config.top else vectors
        self.eigenvalues = np.load(io.BytesIO(ctx.upstream_artifact("alignment", "eigenvalues")))[: len(vectors)]
        base = load_dataset(config.eigen.kernel.data, getattr(ctx, "cached", None))
        per_point = vectors.reshape(len(vectors), len(indices), -1)
        for split, x in enumerate((base.x_train, base.x_test)):
            rows = indices[:, 0] == split
            if np.any(rows):
                self.points.append((x[indices[rows, 1]], per_point[:, rows].reshape(len(vectors), -1)))

    def _operator(self, model, forward, x):
        from ntklab.engine.jacobian_products import JacobianOperator
        from ntklab.engine.models import partition_parameters

        return JacobianOperator(forward, model, x, partition_parameters, batch_size=self.config.batch_size,
                                vector_batch=self.config.chunk)

    def eigenvector_alignment(self, model, forward):
        """(per split, all points): the alignments a_i with the initial eigenvectors."""
        from ntklab.engine.alignment import eigenvector_alignment

        operators = [self._operator(model, forward, x) for x, _ in self.points]
        rows = operators[0].rows // operators[0].n
        if self.points[0][1].shape[1] != operators[0].rows:
            raise ValueError(f"the eigenvectors have {self.points[0][1].shape[1] // len(self.points[0][0])} entries "
                             f"per point but the trained model has {rows} outputs")
        return eigenvector_alignment(operators, [v for _, v in self.points], chunk=self.config.chunk)

    def at_evaluation(self, model, forward, step: int) -> dict[str, float]:
        import numpy as np

        from ntklab.engine.alignment import centred_targets, kernel_target_alignment

        metrics: dict[str, float] = {}
        if len(self.x_subset):
            operator = self._operator(model, forward, self.x_subset)
            targets = centred_targets(self.y_subset, operator.outputs)
            metrics["kernel_target_alignment"] = kernel_target_alignment(operator, targets)
        if self.config.every_eval and self.points:
            parts, together = self.eigenvector_alignment(model, forward)
            table = np.stack([*parts, *([np.full_like(together, np.nan)] * (2 - len(parts))), together])
            buffer = io.BytesIO()
            np.save(buffer, table)
            self.ctx.save_artifact(alignment_artifact_name(step), buffer.getvalue(), kind="npy",
                                   metadata={"rows": ["train", "test", "all"], "shape": list(table.shape), "step": step})
            metrics["alignment_peak_index"] = float(np.argmax(together))
        return metrics

    def at_end(self, model, forward) -> None:
        if not self.points:
            return
        parts, together = self.eigenvector_alignment(model, forward)
        named = dict(zip([f"alignment_{s}" for s in SPLITS], parts))
        named["alignment_all"] = together
        named["alignment_gain"] = together / self.eigenvalues
        for i in range(len(together)):
            self.ctx.log_metrics(i, {name: float(values[i]) for name, values in named.items()})
