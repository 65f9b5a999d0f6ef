"""Block functions: a kernel evaluated between two batches of inputs, and the whole kernel from its blocks.

A block function (`BlockKernel`) evaluates a kernel between two batches of inputs:
`features(x)` computes what a block needs from one batch (for the empirical NTK: Jacobians or
layer inputs and cotangents; for a closed-form kernel it can be the inputs themselves), and
`block(f1, f2)` returns the (n1·r, n2·r) block, r = `outputs` rows per example (sample-major).
The blocked kernel task caches features of a batch for every block that batch takes part in.
This module imports nothing of the engine: every kernel implementation can use it.
"""

from typing import Any, Protocol

import numpy as np


class BlockKernel(Protocol):
    outputs: int  # rows per example in a block (m for full output blocks, 1 for scalar kernels)
    batch_size: int  # the largest batch `features` accepts

    def features(self, x: np.ndarray) -> Any:
        """What blocks need from the batch x (at most `batch_size` examples)."""

    def block(self, f1: Any, f2: Any) -> np.ndarray:
        """The (n1·outputs, n2·outputs) kernel block between two featurized batches."""

    def feature_bytes(self) -> int:
        """Memory held by the features of one batch (0 if they are the inputs)."""


def kernel_block(kernel: BlockKernel, x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """The kernel between two arrays of any length (x2=None: x1 with itself, whose blocks below the
    diagonal are the transposes of those above: K(x, x') = K(x', x)ᵀ for every kernel here), batch
    by batch."""
    same = x2 is None
    x2 = x1 if same else x2
    b, r = kernel.batch_size, kernel.outputs
    cols = [kernel.features(x2[s : s + b]) for s in range(0, len(x2), b)]
    out = None
    for i, s in enumerate(range(0, len(x1), b)):
        f1 = cols[i] if same else kernel.features(x1[s : s + b])
        for j, f2 in enumerate(cols):
            if same and j < i:
                continue
            block = np.asarray(kernel.block(f1, f2))
            if out is None:
                out = np.empty((len(x1) * r, len(x2) * r), block.dtype)
            t, u = s * r, j * b * r
            out[t : t + block.shape[0], u : u + block.shape[1]] = block
            if same and j > i:
                out[u : u + block.shape[1], t : t + block.shape[0]] = block.T
    return out
