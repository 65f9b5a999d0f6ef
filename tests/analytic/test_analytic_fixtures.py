"""Analytic NNGP/NTK against neural-tangents 0.6.5 (tests/reference/nt_fixtures.npz), float64, 1e-10."""

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.engine import analytic as A
from ntklab.engine.config import ModelConfig

FIXTURES = Path(__file__).resolve().parent.parent / "reference" / "nt_fixtures.npz"
DATA = np.load(FIXTURES)
CASES = {c["name"]: c for c in json.loads(str(DATA["cases"]))}
RTOL = 1e-10


def plan_of_ops(ops) -> tuple:
    """The plan of the fixture's op descriptions (tests/reference/make_nt_fixtures.py)."""
    plan = []
    for o in ops:
        init = {"w_std": o.get("w_std", 1.0), "b_std": o.get("b_std"), "parameterization": o.get("parameterization", "standard")}
        kind = o["op"]
        if kind == "dense":
            plan.append(A.Affine(o["out"], **init))
        elif kind == "conv":
            plan.append(A.Affine(o["out"], kernel_size=tuple(o["kernel_size"]), strides=tuple(o.get("strides", (1, 1))),
                                 padding=o["padding"], **init))
        elif kind == "act":
            plan.append(A.Activation(o["name"]))
        elif kind == "avg_pool":
            plan.append(A.AvgPool(tuple(o["window"]), tuple(o["strides"])))
        elif kind == "gap":
            plan.append(A.GlobalAvgPool())
        elif kind == "flatten":
            plan.append(A.Flatten())
        elif kind == "residual":
            plan.append(A.Residual(tuple(plan_of_ops(b) for b in o["branches"])))
        else:
            raise ValueError(kind)
    return tuple(plan)


def plan_of(case) -> tuple:
    if case["kind"] == "config":
        config = TypeAdapter(ModelConfig).validate_python(case["description"])
        return A.plan_from_config(config, tuple(case["input_shape"]))
    return plan_of_ops(case["description"])


def assert_close(actual, expected, what, rtol=RTOL):
    scale = np.max(np.abs(expected))
    err = np.max(np.abs(actual - expected)) / scale
    assert err <= rtol, f"{what}: max relative error {err:.3g} > {rtol}"


def off_diagonal(a):
    return a[~np.eye(len(a), dtype=bool)]


def test_fixture_covers_the_required_architectures():
    names = set(CASES)
    for depth in (1, 2, 3):
        for act in ("relu", "erf"):
            assert {f"mlp_{act}_d{depth}_bias", f"mlp_{act}_d{depth}_nobias"} <= names
    assert {"cnn_relu_gap_same", "cnn_relu_gap_valid", "cnn_relu_flatten_same", "cnn_relu_flatten_valid",
            "myrtle5_relu", "residual_block"} <= names


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_neural_tangents(name):
    case = CASES[name]
    plan = plan_of(case)
    x1, x2 = DATA[f"{name}/x1"], DATA[f"{name}/x2"]
    n1 = len(x1)
    # One symmetric computation over x1 and x2 together, in tiles of 2 (upper triangle, mirrored):
    # its (x1, x2) block is the cross kernel, its (x1, x1) block the self kernel.
    both = A.analytic_kernel(plan, np.concatenate([x1, x2]), dtype="float64", tile=2)
    for which in ("nngp", "ntk"):
        assert both[which].dtype == np.float64
        assert_close(both[which][:n1, n1:], DATA[f"{name}/{which}"], f"{name} {which}(x1, x2)")
        own, expected = both[which][:n1, :n1], DATA[f"{name}/{which}_11"]
        assert_close(off_diagonal(own), off_diagonal(expected), f"{name} {which}(x1, x1) off the diagonal")
        # On the diagonal (an input with itself) the ReLU angle is 0 exactly; neural-tangents computes
        # it as atan2(sqrt(rounding error), k) ~ 1e-8 there, so its ReLU NTK diagonals are off by ~1e-9.
        # ntklab's are exact (test_relu_self_kernel_is_exact); compare them at NT's accuracy.
        assert_close(np.diag(own), np.diag(expected), f"{name} {which}(x, x)", rtol=3e-8)


def test_relu_self_kernel_is_exact():
    """The NTK of a depth-L ReLU MLP (NTK parameterization, no bias, w_std = 1) at (x, x) is
    (L + 1) |x|^2 / d: every ReLU layer halves the variance, w_std^2 = 2 restores it... here w = 1,
    so K_l = |x|^2 / d / 2^l and T_{l+1} = T_l / 2 + K_{l+1} gives T = (L + 1) |x|^2 / (d 2^L)."""
    x = np.random.default_rng(0).normal(size=(6, 7))
    for depth in (1, 2, 3):
        plan = A.plan_from_config(TypeAdapter(ModelConfig).validate_python(
            {"arch": "mlp", "depth": depth, "parameterization": "ntk", "w_std": 1.0}), (7,))
        ntk = A.analytic_kernel(plan, x, dtype="float64")["ntk"]
        expected = (depth + 1) * np.sum(x * x, axis=1) / 7 / 2**depth
        np.testing.assert_allclose(np.diag(ntk), expected, rtol=1e-14)
