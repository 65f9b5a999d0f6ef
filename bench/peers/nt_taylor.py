"""neural-tangents 0.6.5 peer for bench/taylor.py; runs in bench/.venv-nt (bench/peers/make_nt_env.sh).

    python nt_taylor.py SPEC_JSON

SPEC_JSON: {"arch": "mlp" | "cnn", "input_shape": [...], "batch": B, "rounds": R, "repeats": N}.
Builds the stax network of the workload (standard parameterization), perturbs its parameters by
1% of each tensor's standard deviation, and times, for the plain network and for
`nt.taylor_expand(f, params0, k)` at orders 1-4, the jitted forward pass and the gradient of a
sum-of-squares loss of the logits with respect to the parameters. Same timing rule as
bench/taylor.py: the best round's median. Prints one JSON line {"plain": {"fwd": s, "grad": s},
"1": {...}, ..., "4": {...}, "compile_s": s}.
"""

import json
import statistics
import sys
import time
import unittest.mock

sys.modules["neural_tangents.experimental"] = unittest.mock.MagicMock()  # avoids tensorflow

import jax
import jax.numpy as jnp
import neural_tangents as nt
from neural_tangents import stax

spec = json.loads(sys.argv[1])


def network(arch):
    kw = {"parameterization": "standard"}
    if arch == "mlp":
        return stax.serial(stax.Flatten(), stax.Dense(512, **kw), stax.Erf(), stax.Dense(512, **kw), stax.Erf(),
                           stax.Dense(10, **kw))  # fmt: skip
    layers = []
    for _ in range(4):
        layers += [stax.Conv(128, (3, 3), padding="VALID", **kw), stax.Relu()]
    return stax.serial(*layers, stax.GlobalAvgPool(), stax.Dense(10, **kw))


init_fn, apply_fn, _ = network(spec["arch"])
shape = (spec["batch"], *spec["input_shape"])
_, params0 = init_fn(jax.random.PRNGKey(0), shape)
leaves, treedef = jax.tree_util.tree_flatten(params0)
keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
params = jax.tree_util.tree_unflatten(
    treedef, [p + 0.01 * jnp.std(p) * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)]
)
x = jax.random.normal(jax.random.PRNGKey(2), shape, jnp.float32)


def timed(f):
    def loss(p, x):
        return jnp.sum(f(p, x) ** 2)

    fwd, grad = jax.jit(f), jax.jit(jax.grad(loss))
    return {"fwd": lambda: fwd(params, x), "grad": lambda: grad(params, x)}


calls = {("plain", name): call for name, call in timed(apply_fn).items()}
for order in (1, 2, 3, 4):
    for name, call in timed(nt.taylor_expand(apply_fn, params0, order)).items():
        calls[(str(order), name)] = call

start = time.perf_counter()
for call in calls.values():
    jax.block_until_ready(call())
compile_s = time.perf_counter() - start

best = {key: float("inf") for key in calls}
for _ in range(spec["rounds"]):
    for key, call in calls.items():
        samples = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples.append(time.perf_counter() - start)
        best[key] = min(best[key], statistics.median(samples))

result = {"compile_s": compile_s, "jax": jax.__version__}
for (order, name), seconds in best.items():
    result.setdefault(order, {})[name] = seconds
print(json.dumps(result))
