"""neural-tangents 0.6.5 peer for bench/entk.py; runs in bench/.venv-nt (bench/peers/make_nt_env.sh).

Reads a problem file written by bench/entk.py (.npz: architecture name, weights in ntklab's layer
order, inputs), rebuilds the same network in stax (NTK parameterization, the same weights),
checks f(x) against ntklab's logits, and times `nt.empirical_ntk_fn` for the implementations asked.
Prints one JSON line per implementation: {"impl", "compile_s", "seconds", "kernel_file"}.
"""

import json
import sys
import time
import unittest.mock

sys.modules["neural_tangents.experimental"] = unittest.mock.MagicMock()  # avoids tensorflow

import jax
import neural_tangents as nt
import numpy as np
from neural_tangents import stax

IMPLEMENTATIONS = {
    "jacobian": nt.NtkImplementation.JACOBIAN_CONTRACTION,
    "ntvp": nt.NtkImplementation.NTK_VECTOR_PRODUCTS,
    "structured": nt.NtkImplementation.STRUCTURED_DERIVATIVES,
}


def network(arch: str, w_std: float, b_std: float, out_dim: int, width: int):
    if arch == "lenet5":
        return stax.serial(
            stax.Conv(6, (5, 5), padding="SAME", W_std=w_std, b_std=b_std), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
            stax.Conv(16, (5, 5), padding="SAME", W_std=w_std, b_std=b_std), stax.Relu(), stax.AvgPool((2, 2), (2, 2)),
            stax.Flatten(),
            stax.Dense(120, W_std=w_std, b_std=b_std), stax.Relu(),
            stax.Dense(84, W_std=w_std, b_std=b_std), stax.Relu(),
            stax.Dense(out_dim, W_std=w_std, b_std=b_std),
        )
    if arch == "mlp":
        return stax.serial(
            stax.Flatten(),
            stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu(),
            stax.Dense(width, W_std=w_std, b_std=b_std), stax.Relu(),
            stax.Dense(out_dim, W_std=w_std, b_std=b_std),
        )
    raise ValueError(arch)


def main(problem_path: str, impls: list[str], repeats: int, out_prefix: str) -> None:
    problem = np.load(problem_path)
    arch = str(problem["arch"])
    x1, x2 = problem["x1"], problem["x2"]
    weights = [(problem[f"w{i}"], problem[f"b{i}"]) for i in range(int(problem["layers"]))]
    init_fn, apply_fn, _ = network(arch, float(problem["w_std"]), float(problem["b_std"]),
                                   int(problem["out_dim"]), int(problem["width"]))
    _, params = init_fn(jax.random.PRNGKey(0), x1.shape)
    it = iter(weights)
    params = [tuple(next(it)) if p else p for p in params]  # parameter-free layers have ()
    logits = np.asarray(apply_fn(params, x1))
    error = float(np.max(np.abs(logits - problem["logits"])) / np.max(np.abs(problem["logits"])))
    print(json.dumps({"check": "logits", "relative_error": error}), flush=True)
    for name in impls:
        fn = jax.jit(nt.empirical_ntk_fn(apply_fn, trace_axes=(), vmap_axes=0, implementation=IMPLEMENTATIONS[name]))
        start = time.perf_counter()
        kernel = jax.block_until_ready(fn(x1, x2, params))
        compile_s = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(x1, x2, params))
            times.append(time.perf_counter() - start)
        n1, n2, m = kernel.shape[0], kernel.shape[1], kernel.shape[2]
        flat = np.asarray(kernel).transpose(0, 2, 1, 3).reshape(n1 * m, n2 * m)
        path = f"{out_prefix}_nt_{name}.npy"
        np.save(path, flat)
        print(json.dumps({"impl": name, "compile_s": compile_s, "seconds": min(times), "kernel_file": path}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), sys.argv[4])
