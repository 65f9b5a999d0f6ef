"""The closed-form kernels of Ghorbani et al. 2020, in numpy float64.

With u = <x, z> / (|x| |z|) clipped to [-1, 1] (0 where either input is zero):

    ntk2        |x| |z| [u (1 - arccos(u) / pi) + sqrt(1 - u^2) / (2 pi)]
                the NTK of a two-layer ReLU network f(x) = sum_i a_i relu(<w_i, x>), w_i ~ N(0, I),
                a_i ~ N(0, 1), both layers trained (NTK parameterization, 1/sqrt(width) readout);
    rf2         |x| |z| [u (pi - arccos(u)) + sqrt(1 - u^2)] / (2 pi)
                the arc-cosine kernel of degree 1 (Cho & Saul): the random-features kernel
                E_w[relu(<w, x>) relu(<w, z>)], only the readout trained;
    polynomial  (c + <x, z> / sqrt(d))^p.

Inputs of any norm: ntk2 and rf2 are positively homogeneous of degree 1 in each input, so they
equal |x| |z| times their value on the unit sphere. In the units of engine/analytic.py (input
covariance <x, z> / d, weights of variance w_std^2 / fan_in), ntk2 = d x the analytic NTK and rf2 =
d x the analytic NNGP of `mlp` with depth 1, ReLU, w_std = 1, no bias, NTK parameterization.
"""

from typing import Literal

import numpy as np

ClosedForm = Literal["ntk2", "rf2", "polynomial"]


def _norms_and_cosines(x1: np.ndarray, x2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x1 = np.asarray(x1, np.float64).reshape(len(x1), -1)
    x2 = np.asarray(x2, np.float64).reshape(len(x2), -1)
    n1 = np.linalg.norm(x1, axis=1)
    n2 = np.linalg.norm(x2, axis=1)
    norms = np.outer(n1, n2)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = np.where(norms > 0, (x1 @ x2.T) / np.where(norms > 0, norms, 1.0), 0.0)
    return norms, np.clip(u, -1.0, 1.0)


def _angle(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(arccos(u), sqrt(1 - u^2)), with u within a few rounding errors of +-1 taken as exactly +-1
    (an input with itself): there arccos is ill-conditioned, a rounding error e in u moving it by
    sqrt(2 e)."""
    near = 1.0 - np.abs(u) <= 16 * np.finfo(np.float64).eps
    theta = np.where(near, np.where(u > 0, 0.0, np.pi), np.arccos(u))
    sine = np.where(near, 0.0, np.sqrt(1.0 - u * u))
    return theta, sine


def ntk2(x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Two-layer ReLU NTK (Ghorbani's NTK2) between the rows of x1 and x2 (x2 = x1 when None)."""
    norms, u = _norms_and_cosines(x1, x1 if x2 is None else x2)
    theta, sine = _angle(u)
    return norms * (u * (1.0 - theta / np.pi) + sine / (2 * np.pi))


def rf2(x1: np.ndarray, x2: np.ndarray | None = None) -> np.ndarray:
    """Degree-1 arc-cosine kernel (Ghorbani's RFK2, `gp`) between the rows of x1 and x2."""
    norms, u = _norms_and_cosines(x1, x1 if x2 is None else x2)
    theta, sine = _angle(u)
    return norms * (u * (np.pi - theta) + sine) / (2 * np.pi)


def polynomial(x1: np.ndarray, x2: np.ndarray | None = None, degree: int = 2, c: float = 1.0) -> np.ndarray:
    """(c + <x, z> / sqrt(d))^degree between the rows of x1 and x2 (d: the flattened input size)."""
    x1 = np.asarray(x1, np.float64).reshape(len(x1), -1)
    x2 = x1 if x2 is None else np.asarray(x2, np.float64).reshape(len(x2), -1)
    return (c + (x1 @ x2.T) / np.sqrt(x1.shape[1])) ** degree


def closed_form_kernel(
    which: ClosedForm, x1: np.ndarray, x2: np.ndarray | None = None, degree: int = 2, c: float = 1.0
) -> np.ndarray:
    if which == "ntk2":
        return ntk2(x1, x2)
    if which == "rf2":
        return rf2(x1, x2)
    if which == "polynomial":
        return polynomial(x1, x2, degree, c)
    raise ValueError(f"unknown closed-form kernel {which!r}: ntk2, rf2 or polynomial")


class ClosedFormBlocks:
    """A closed-form kernel as a block function for the `kernel` task (engine/kernels.py)."""

    outputs = 1

    def __init__(self, which: ClosedForm, degree: int, c: float, batch_size: int):
        self.which, self.degree, self.c, self.batch_size = which, degree, c, batch_size

    def features(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x)

    def block(self, f1: np.ndarray, f2: np.ndarray) -> np.ndarray:
        return closed_form_kernel(self.which, f1, f2, self.degree, self.c)

    def feature_bytes(self) -> int:
        return 0
