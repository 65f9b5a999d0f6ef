"""Binary tasks from a kernel eigenvector (Ortiz-Jiménez et al. 2021).

Point i of the kernel gets the label (sign(v_i) + 1) // 2 from eigenvector v: 1 where v_i > 0,
0 where v_i < 0, and 0 for an exact zero. The kernel's points are the training set followed by
the test set (the transductive setting), so the training labels and the test labels are the two
slices of one eigenvector.
"""

import numpy as np


def eigenfunction_labels(vector: np.ndarray) -> np.ndarray:
    """(sign(v) + 1) // 2 as int32, exact zeros mapped to 0."""
    return ((np.sign(np.asarray(vector)).astype(np.int64) + 1) // 2).astype(np.int32)


def split_labels(labels: np.ndarray, indices: np.ndarray, n_train: int, n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """(train labels, test labels) from per-point labels and the eigen run's `indices`
    (split 0 train / 1 test, index in the split, one row per kernel point)."""
    splits = [np.full(n, -1, np.int32) for n in (n_train, n_test)]
    for split, out in enumerate(splits):
        rows = indices[:, 0] == split
        out[indices[rows, 1]] = labels[rows]
        if np.any(out < 0):
            raise ValueError(f"the eigenvectors do not cover every {('train', 'test')[split]} point "
                             "(use a kernel with points: train+test)")
    return splits[0], splits[1]
