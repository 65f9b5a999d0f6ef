"""Analytic NNGP/NTK against neural-tangents 0.6.5 (tests/reference/nt_fixtures.npz), float64, 1e-10.

The fixture's stax networks were made from the plans of these model configs
(tests/reference/fixture_plans.py, make_nt_fixtures.py): each case checks first that the config's
plan is still the one stored with it."""

import json
from pathlib import Path

import numpy as np
import pytest

from ntklab.engine import analytic as A
from ntklab.engine.config import parse_model_config
from ntklab.engine.plan import Plan, to_layers
from ntklab.engine.presets import plan_of

FIXTURES = Path(__file__).resolve().parent.parent / "reference" / "nt_fixtures.npz"
DATA = np.load(FIXTURES)
CASES = {c["name"]: c for c in json.loads(str(DATA["cases"]))}
RTOL = 1e-10


def plan_of_case(case) -> Plan:
    return plan_of(parse_model_config(case["description"]))


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
            "myrtle5_relu", "lenet5_relu", "residual_block"} <= names
    assert {"layers_cnn_own_readout", "layers_residual_act_gap", "layers_myrtle_stack", "layers_concat"} <= names


def test_every_named_architecture_with_a_kernel_is_in_the_fixture():
    """The architectures with a kernel are those whose preset plan has one (plan.kernel_problem)."""
    from ntklab.engine.plan import kernel_problem

    arches = {"mlp": {}, "cnn": {}, "lenet5": {}, "myrtle5": {}, "logistic": {}, "wrn": {}, "resnet18": {},
              "layers": {"layers": [{"op": "max_pool"}, {"op": "flatten"}, {"op": "dense"}]}}
    with_kernel = {a for a, extra in arches.items() if kernel_problem(plan_of(parse_model_config({"arch": a, **extra})).ops) is None}
    assert with_kernel == {"mlp", "cnn", "lenet5", "myrtle5", "logistic", "wrn"}
    in_fixture = {case["description"]["arch"] for case in CASES.values()}
    assert with_kernel - {"logistic", "wrn"} <= in_fixture  # logistic: one Dense; wrn: residual_* cases


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_neural_tangents(name):
    case = CASES[name]
    plan = plan_of_case(case)
    assert to_layers(plan.ops) == case["plan"], "the plan changed since the fixture was made from it"
    x1, x2 = DATA[f"{name}/x1"], DATA[f"{name}/x2"]
    n1 = len(x1)
    # One symmetric computation over x1 and x2 together, in tiles of 2 (upper triangle, mirrored):
    # its (x1, x2) block is the cross kernel, its (x1, x1) block the self kernel.
    both = A.analytic_kernels(plan, np.concatenate([x1, x2]), dtype="float64", tile=2)
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
        plan = plan_of(parse_model_config(
            {"arch": "mlp", "depth": depth, "parameterization": "ntk", "w_std": 1.0}))
        ntk = A.analytic_kernel(plan, x, dtype="float64")
        expected = (depth + 1) * np.sum(x * x, axis=1) / 7 / 2**depth
        np.testing.assert_allclose(np.diag(ntk), expected, rtol=1e-14)


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.startswith("layers_")))
def test_empirical_ntk_of_layers_networks_is_the_brute_force_one(name, monkeypatch):
    """The networks written as `layers` in the fixture: their finite models' empirical NTK
    (`structured`, float64) against J·Jᵀ of whole-batch `jax.jacrev` Jacobians."""
    import jax

    from ntklab.engine import entk
    from ntklab.engine.models import build_model

    monkeypatch.setattr(entk, "COMPILER_OPTIONS", {"xla_backend_optimization_level": 0})
    case = CASES[name]
    config = parse_model_config(case["description"])
    shape = tuple(case["input_shape"])
    x1, x2 = DATA[f"{name}/x1"], DATA[f"{name}/x2"]
    with jax.enable_x64(True):
        model = entk.cast_floats(build_model(config, shape, 2, jax.random.PRNGKey(0)), "float64")
        reference = entk.reference_ntk(model, x1, x2)
        got = entk.EmpiricalNTK(model, shape, "structured", dtype="float64", batch_size=len(x1))(x1, x2)
    assert got.shape == (2 * len(x1), 2 * len(x2))
    assert_close(got, reference, f"{name} empirical NTK", rtol=1e-12)
