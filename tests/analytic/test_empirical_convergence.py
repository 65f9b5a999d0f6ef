"""The empirical NTK of finite networks of width w approaches the analytic NTK like w^(-1/2)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import TypeAdapter

from ntklab.engine import analytic as A
from ntklab.engine.config import ModelConfig
from ntklab.engine.models import build_model

parse = TypeAdapter(ModelConfig).validate_python


@eqx.filter_jit
def _jacobian_gram(model, x):
    params, static = eqx.partition(model, eqx.is_array)

    def f(p):
        return eqx.combine(p, static)(x)[:, 0]

    jac = jax.jacrev(f)(params)
    flat = jnp.concatenate([j.reshape(len(x), -1) for j in jax.tree_util.tree_leaves(jac)], axis=1)
    return flat @ flat.T


def empirical_ntk(model, x):
    """J J^T for the single-output network (all parameters trainable)."""
    return np.asarray(_jacobian_gram(model, x), np.float64)


CASES = {  # small sizes keep the Jacobians cheap; 4 initializations per width
    # (a CNN of depth 1: deeper CNNs' errors are heavy-tailed across initializations, so their
    # slope needs many more; the fixture tests check the depth-2+ recursions exactly)
    "mlp1_relu_ntk": ({"arch": "mlp", "depth": 1, "activation": "relu", "parameterization": "ntk", "b_std": 0.2},
                      "width", [64, 256, 1024, 4096], (10,)),
    "mlp2_erf_standard": ({"arch": "mlp", "depth": 2, "activation": "erf", "parameterization": "standard",
                           "w_std": 1.5}, "width", [16, 64, 256, 1024], (10,)),
    "cnn_gap_relu": ({"arch": "cnn", "depth": 1, "padding": "SAME", "parameterization": "ntk", "b_std": 0.1},
                     "channels", [16, 64, 256, 1024, 4096], (4, 4, 1)),
}


@pytest.mark.parametrize("name", CASES)
def test_relative_error_decreases_like_inverse_square_root_of_width(name):
    spec, field, widths, shape = CASES[name]
    x = np.random.default_rng(0).normal(size=(5, *shape)).astype(np.float32)
    errors = []
    for w in widths:
        config = parse({**spec, field: w})
        analytic = A.kernel_from_config(config, x, which="ntk")
        runs = []
        for seed in range(4):
            model = build_model(config, shape, 1, jax.random.PRNGKey(seed))
            runs.append(np.linalg.norm(empirical_ntk(model, x) - analytic) / np.linalg.norm(analytic))
        errors.append(np.mean(runs))
    slope = np.polyfit(np.log(widths), np.log(errors), 1)[0]
    assert -0.8 < slope < -0.3, (slope, errors)
    assert errors[-1] < errors[0] / 2.5
