"""Each storage precision of one trained network's kernel is computed from the pristine parameters.

ntkgen casts the network to float16 in place for its float16 kernel, so the float32 kernel that
follows is computed from float16-rounded weights. Here the float16 and float64 kernels of one
`params` artifact are computed in one process, float16 first; the float64 kernel must equal the
kernel of the untouched parameters to float64 precision."""

import io

import equinox as eqx
import jax
import numpy as np
from fakectx import FakeContext, fast_compile

from ntklab.data.sources import load_dataset
from ntklab.engine.entk import EmpiricalNTK
from ntklab.engine.models import build_model
from ntklab.engine.training import model_to_bytes
from ntklab.kernelstore import KernelStore
from ntklab.tasks.registry import RUN_CONFIG, run_function

DATA = {"dataset": "synthetic", "n_train": 12, "n_test": 4, "dim": 16, "image_shape": [4, 4, 1], "num_classes": 3}
MODEL = {"arch": "mlp", "depth": 1, "width": 16, "b_std": 0.1}
TRAIN = {"task": "train", "data": DATA, "model": MODEL,
         "train": {"loss": "mse", "optimizer": {"name": "sgd", "lr": 0.1}, "epochs": 1}}


def kernel_run(storage: str, compute: str):
    return RUN_CONFIG.validate_python({
        "task": "kernel", "data": DATA, "block_size": 4, "storage_dtype": storage,
        "kernel": {"kind": "empirical", "at": TRAIN, "dtype": compute},
    })


def test_float16_storage_does_not_round_the_parameters_of_a_later_kernel(tmp_path, monkeypatch):
    fast_compile(monkeypatch)
    dataset = load_dataset(RUN_CONFIG.validate_python(TRAIN).data)
    with jax.enable_x64(True):
        trained = build_model(RUN_CONFIG.validate_python(TRAIN).model, dataset.input_shape, 3, jax.random.PRNGKey(5))
        # weights that float16 cannot represent: a rounding of them would show at 1e-4 relative
        trained = jax.tree_util.tree_map(lambda a: a * (1 + 1e-3 * np.pi) if eqx.is_inexact_array(a) else a, trained)
        params = model_to_bytes(trained)
        stores = {}
        for storage, compute in (("float16", "float32"), ("float64", "float64")):
            ctx = FakeContext(tmp_path, run_key=storage, upstream_bytes={("at", "params"): params})
            run_function("kernel")(kernel_run(storage, compute), ctx)
            stores[storage] = KernelStore.open(tmp_path / storage / "kernel").read_train(np.float64)
        pristine = eqx.tree_deserialise_leaves(io.BytesIO(params), trained)
        x = np.asarray(dataset.x_train, np.float64)
        reference = np.asarray(EmpiricalNTK(pristine, dataset.input_shape, "jacobian", batch_size=12,
                                            dtype="float64")(x))
    np.testing.assert_allclose(stores["float64"], reference, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stores["float16"], reference, rtol=2e-3, atol=2e-3)
    assert np.max(np.abs(stores["float16"] - reference)) > 1e-6  # float16 storage did round its own copy
