"""How a network's empirical NTK aligns with given directions, matrix-free.

Eigenvector alignment (Ortiz-Jiménez et al. 2021): for vectors v_i over the kernel's points
(the top eigenvectors of the kernel at initialization) and the kernel K_t = J_t J_tᵀ of the
network at a later point, a_i = v_iᵀ K_t v_i / ‖v_i‖² = ‖J_tᵀ v_i‖² / ‖v_i‖². Jᵀv is one VJP per
data batch (ntklab/engine/jacobian_products.py), so K_t is never formed: cost about one backward
pass over the data per vector, memory `chunk` parameter vectors. With the points split into a
training and a test part, J_allᵀ v = J_trainᵀ v_train + J_testᵀ v_test gives the alignment on
each slice and on all points from the same two products.

Kernel-target alignment (Cristianini et al. 2002): A = yᵀ K y / (‖K‖_F ‖y‖²) on a subset of the
training points, with K on the subset formed by K·I through the same products (n_s² entries).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ntklab.engine.jacobian_products import JacobianOperator, squared_norms


def eigenvector_alignment(operators: Sequence[JacobianOperator], vectors: Sequence[np.ndarray], chunk: int = 32
                          ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per part p (operator J_p, vectors V_p of shape (k, rows_p)): a_i on that part,
    ‖J_pᵀ v_i‖² / ‖v_i,p‖²; and on all parts together, ‖Σ_p J_pᵀ v_i,p‖² / Σ_p ‖v_i,p‖²."""
    k = vectors[0].shape[0]
    per_part = [np.empty(k) for _ in operators]
    together = np.empty(k)
    for start in range(0, k, chunk):
        stop = min(start + chunk, k)
        total = None
        denominator = np.zeros(stop - start)
        for p, (operator, part) in enumerate(zip(operators, vectors)):
            block = np.asarray(part[start:stop], np.float64)
            norms = np.sum(block**2, axis=1)
            products = operator.transpose_apply(block.T)
            per_part[p][start:stop] = np.asarray(squared_norms(products)) / np.where(norms > 0, norms, np.nan)
            total = products if total is None else jax.tree_util.tree_map(jnp.add, total, products)
            denominator += norms
        together[start:stop] = np.asarray(squared_norms(total)) / denominator
    return per_part, together


def kernel_target_alignment(operator: JacobianOperator, targets: np.ndarray) -> float:
    """yᵀ K y / (‖K‖_F ‖y‖²) for targets y over the operator's rows (n·m), K formed as K·I."""
    kernel = operator.kernel_apply(np.eye(operator.rows, dtype=operator.dtype)).astype(np.float64)
    y = np.asarray(targets, np.float64).reshape(-1)
    return float(y @ kernel @ y / (np.linalg.norm(kernel) * (y @ y)))


def centred_targets(labels: np.ndarray, outputs: int) -> np.ndarray:
    """Targets for kernel-target alignment, sample-major: 2·label - 1 for one logit, one-hot
    minus 1/m for m outputs."""
    labels = np.asarray(labels)
    if outputs == 1:
        return 2.0 * labels - 1.0
    return (np.eye(outputs)[labels] - 1.0 / outputs).reshape(-1)
