"""A run's headline metrics: the few numbers a person looks for first when a run ends.

They are the `y` metrics of the experiment's figures that the run recorded; else its task's main
metrics (below); else up to two recorded metrics whose name tells which direction is better,
test metrics first. Shown by the progress line of a finished run, `ntklab run`'s summary,
`ntklab status` and `ntklab watch`.
"""

from collections.abc import Collection, Iterable, Mapping
from typing import Literal

# The metrics each task logs that answer "how did it do" (see ntklab/tasks/).
TASK_HEADLINES: Mapping[str, tuple[str, ...]] = {
    "train": ("test_accuracy", "test_loss"),
    "krr": ("best_test_accuracy", "best_test_mse"),
    "ridge_cg": ("best_test_accuracy", "best_test_mse"),
    "kernel_error": ("rel_error", "test_rel_error"),
    "kernel": ("kernel_mb", "seconds"),
    "probe": ("loss",),
}
FALLBACK_COUNT = 2

# Words in a metric name that tell whether larger or smaller values are better.
LARGER_IS_BETTER = ("accuracy", "acc", "agreement", "alignment", "auc", "precision", "recall", "f1", "r2", "score")
SMALLER_IS_BETTER = ("loss", "error", "err", "distance", "dist", "mse", "rmse", "mae", "risk", "nll", "perplexity")


def best_direction(metric: str) -> Literal["max", "min"] | None:
    """`max` for accuracy-like names, `min` for loss/error/distance-like names, None if unclear.

    The name is split at `_`, `/`, `.` and `-`; the last part that is a known word decides, so
    `test_accuracy` -> max, `fn_distance` -> min, `dist_init_rel` -> min, `accuracy_gap` -> max."""
    parts = [p for p in metric.lower().replace("/", "_").replace(".", "_").replace("-", "_").split("_") if p]
    for part in reversed(parts):
        if part in LARGER_IS_BETTER:
            return "max"
        if part in SMALLER_IS_BETTER:
            return "min"
    return None


def headline_names(task: str, recorded: Collection[str], figure_metrics: Iterable[str] = ()) -> list[str]:
    """The headline metrics of a run of `task` that recorded the metrics `recorded`."""
    chosen = [m for m in dict.fromkeys(figure_metrics) if m in recorded]
    if chosen:
        return chosen
    chosen = [m for m in TASK_HEADLINES.get(task, ()) if m in recorded]
    if chosen:
        return chosen
    known = sorted((m for m in recorded if best_direction(m)), key=lambda m: (not m.startswith("test"), m))
    return known[:FALLBACK_COUNT]


def headline_text(values: Mapping[str, float | None]) -> str:
    """`test_accuracy 0.9722  test_loss 0.0913`: values to 4 significant digits, NaN as `nan`."""
    return "  ".join(f"{name} {'nan' if value is None else f'{value:.4g}'}" for name, value in values.items())
