"""neural-tangents 0.6.5 peer for bench/infinite.py; runs in bench/.venv-nt (bench/peers/make_nt_env.sh).

    python nt_infinite.py PROBLEM.npz OUT.npz

PROBLEM.npz holds `spec` (JSON: arch, depth, activation, w_std, b_std, dtype, batch_size, repeats)
and the inputs `x`. Builds the stax network (NTK parameterization), computes the NNGP and NTK of x
with itself through `nt.batch`, and writes the kernels to OUT.npz. Prints one JSON line:
{"compile_s": first call, "seconds": minimum over the repeats after it}.
"""

import json
import sys
import time
import unittest.mock

sys.modules["neural_tangents.experimental"] = unittest.mock.MagicMock()  # avoids tensorflow

import jax

problem = dict(__import__("numpy").load(sys.argv[1]))
spec = json.loads(str(problem["spec"]))
jax.config.update("jax_enable_x64", spec["dtype"] == "float64")

import neural_tangents as nt
import numpy as np
from neural_tangents import stax


def network(spec):
    kw = {"W_std": spec["w_std"], "b_std": spec["b_std"], "parameterization": "ntk"}
    act = {"relu": stax.Relu, "erf": stax.Erf}[spec["activation"]]
    arch = spec["arch"]
    if arch == "mlp":
        layers = [stax.Flatten()]
        for _ in range(spec["depth"]):
            layers += [stax.Dense(512, **kw), act()]
        return stax.serial(*layers, stax.Dense(1, **kw))
    if arch == "cnn":
        layers = []
        for _ in range(spec["depth"]):
            layers += [stax.Conv(128, (3, 3), padding="SAME", **kw), act()]
        return stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(1, **kw))
    if arch == "myrtle5":
        pool = stax.AvgPool((2, 2), strides=(2, 2), padding="VALID")

        def conv():
            return stax.Conv(128, (3, 3), padding="SAME", **kw)

        return stax.serial(conv(), act(), conv(), act(), pool, conv(), act(), pool, conv(), act(),
                           stax.GlobalAvgPool(), stax.Dense(1, **kw))  # fmt: skip
    raise SystemExit(f"unknown arch {arch}")


kernel_fn = nt.batch(network(spec)[2], batch_size=spec["batch_size"])
x = np.asarray(problem["x"], spec["dtype"])


def compute():
    k = kernel_fn(x, None, ("nngp", "ntk"))
    return jax.block_until_ready(k.nngp), jax.block_until_ready(k.ntk)


start = time.perf_counter()
nngp, ntk = compute()
compile_s = time.perf_counter() - start
times = []
for _ in range(spec["repeats"]):
    start = time.perf_counter()
    nngp, ntk = compute()
    times.append(time.perf_counter() - start)
np.savez(sys.argv[2], nngp=np.asarray(nngp), ntk=np.asarray(ntk))
print(json.dumps({"compile_s": compile_s, "seconds": min(times)}))
