"""The `krr` task: kernel ridge regression on the one-hot labels (or regression targets) over a
sweep of ridges λ.

The kernel is an upstream `kernel` run (reused by identity across experiments); one
eigendecomposition serves every λ (or one Cholesky per λ when that is cheaper, `solver: auto`).
Per λ (metrics at step = index of λ in the sweep): `ridge`, train/test `mse` (mean over examples
of the squared error summed over outputs) and `accuracy` (argmax), the exact leave-one-out
`loo_mse` and `loo_accuracy`, and `gcv`. The λ with the smallest LOO error is reported as
`best_*` metrics (at its step) and its predictions are saved as artifacts.

Targets: one-hot labels minus an offset (`centring`): none, mean (1/classes) or ghorbani (0.1,
as Ghorbani et al.'s Kernel_Fit.py); the offset is added back to the predictions. Regression
targets (float labels, the spiked dataset) are regressed as they are (centring mean: minus their
training mean; none and ghorbani: as is, Ghorbani's label mean 0 for synthetic data), scored by
`mse` (the risk) and `r2` instead of accuracy. A kernel with
full output blocks (m rows per example) regresses each example's m outputs jointly (m must equal
the number of classes); a traced or scalar kernel is shared by the outputs.
"""

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveInt, field_validator

from ntklab.configbase import StrictModel, non_semantic
from ntklab.tasks.context import RunContext
from ntklab.tasks.kernel import KernelRunConfig


class LogSpace(StrictModel):
    """10^linspace(a, b, n)."""

    logspace: tuple[float, float, PositiveInt]


class KRRRunConfig(StrictModel):
    task: Literal["krr"]
    kernel: KernelRunConfig = Field(description="the kernel run (an upstream run)")
    ridge: list[NonNegativeFloat] | LogSpace = Field(description="the regularizations λ: a list or {logspace: [a, b, n]}")
    centring: Literal["none", "mean", "ghorbani"] = Field(
        "mean", description="offset subtracted from the one-hot targets: none, mean (1/classes), ghorbani (0.1)"
    )
    loo: bool = Field(True, description="compute leave-one-out errors (and choose the best λ by them; else by GCV)")
    save_all_predictions: bool = Field(False, description="also save the test predictions of every λ")
    solver: Literal["auto", "eigh", "cholesky"] = non_semantic(
        "auto", "eigh: one eigendecomposition for all λ; cholesky: one factorization per λ (same result to rounding)"
    )

    @field_validator("ridge")
    @classmethod
    def _nonempty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give at least one ridge")
        return value

    def ridges(self) -> list[float]:
        if isinstance(self.ridge, LogSpace):
            a, b, n = self.ridge.logspace
            return [10 ** (a + (b - a) * i / (n - 1)) if n > 1 else 10**a for i in range(n)]
        return list(self.ridge)

    def upstream_runs(self) -> dict[str, KernelRunConfig]:
        return {"kernel": self.kernel}


def targets(labels, classes: int, offset: float):
    import numpy as np

    return np.eye(classes)[labels] - offset


def run(config: KRRRunConfig, ctx: RunContext) -> None:
    import io

    import numpy as np

    from ntklab.engine.krr import solve_ridge_sweep
    from ntklab.kernelstore import KernelStore

    store = KernelStore.open(ctx.upstream_artifact_dir("kernel", "kernel"))
    if not store.is_complete():
        raise ValueError(f"the kernel store {store.path} is incomplete")
    y_train, y_test = store.labels("train"), store.labels("test")
    r = store.outputs
    regression = np.issubdtype(y_train.dtype, np.floating)
    if regression:
        if r > 1:
            raise ValueError(f"the kernel has {r} outputs per example; regression targets need a scalar kernel")
        classes = 1
        offset = float(np.mean(y_train)) if config.centring == "mean" else 0.0
        t_train, t_test = y_train[:, None] - offset, y_test[:, None] - offset
    else:
        classes = int(max(y_train.max(), y_test.max() if len(y_test) else 0)) + 1
        classes = max(classes, r)
        if r > 1 and r != classes:
            raise ValueError(f"the kernel has {r} outputs per example but the labels have {classes} classes")
        offset = {"none": 0.0, "mean": 1.0 / classes, "ghorbani": 0.1}[config.centring]
        t_train, t_test = targets(y_train, classes, offset), targets(y_test, classes, offset)
    k_train = store.read_train(np.float64)
    k_test = store.read_test(np.float64) if store.n_test else None
    y = t_train.reshape(-1, 1) if r > 1 else t_train  # sample-major rows for full output blocks
    ridges = np.asarray(config.ridges())
    solution = solve_ridge_sweep(k_train, y, ridges, k_test=k_test, rows_per_example=r, loo=config.loo,
                                 solver=config.solver)

    def per_example(values: np.ndarray, n: int) -> np.ndarray:  # (L, n·r, 1) or (L, n, C) -> (L, n, C)
        return values.reshape(len(ridges), n, classes)

    n, m = len(y_train), len(y_test)
    train_pred = per_example(solution.train_predictions, n) + offset
    test_pred = per_example(solution.test_predictions, m) + offset if k_test is not None else None
    loo_pred = per_example(y - solution.loo_residuals, n) + offset if config.loo else None

    def mse(pred, target):
        return np.mean(np.sum((pred - target) ** 2, axis=-1), axis=-1)

    def score(pred, labels, target):
        """Accuracy (argmax) of class predictions; R² of regression predictions."""
        if regression:
            return 1.0 - mse(pred, target) / np.var(target)
        return np.mean(np.argmax(pred, axis=-1) == labels[None, :], axis=-1)

    scored = "r2" if regression else "accuracy"
    series = {
        "ridge": ridges,
        "train_mse": mse(train_pred, t_train + offset),
        f"train_{scored}": score(train_pred, y_train, t_train + offset),
        "gcv": solution.gcv,
    }
    if test_pred is not None:
        series["test_mse"] = mse(test_pred, t_test + offset)
        series[f"test_{scored}"] = score(test_pred, y_test, t_test + offset)
    if loo_pred is not None:
        series["loo_mse"] = mse(loo_pred, t_train + offset)
        series[f"loo_{scored}"] = score(loo_pred, y_train, t_train + offset)
    for step in range(len(ridges)):
        ctx.log_metrics(step, {name: float(values[step]) for name, values in series.items()})
    criterion = series["loo_mse"] if config.loo else series["gcv"]
    best = int(np.nanargmin(criterion))
    summary = {f"best_{name}": float(values[best]) for name, values in series.items()}
    summary["best_index"] = float(best)
    summary.update({f"kernel_{k}": v for k, v in solution.extra.items()})
    ctx.log_metrics(best, summary)

    def npy(array: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        np.save(buffer, array)
        return buffer.getvalue()

    meta = {"ridge": float(ridges[best]), "index": best, "offset_added": offset, "solver": solution.solver}
    ctx.save_artifact("train_predictions", npy(train_pred[best].astype(np.float32)), kind="npy",
                      metadata={**meta, "shape": [n, classes]})
    if test_pred is not None:
        ctx.save_artifact("test_predictions", npy(test_pred[best].astype(np.float32)), kind="npy",
                          metadata={**meta, "shape": [m, classes]})
        if config.save_all_predictions:
            ctx.save_artifact("test_predictions_all", npy(test_pred.astype(np.float32)), kind="npy",
                              metadata={"ridges": ridges.tolist(), "shape": list(test_pred.shape)})
