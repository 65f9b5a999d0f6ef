"""Write neural-tangents' NNGP and NTK values for a set of architectures to nt_fixtures.npz.

Runs in the pinned neural-tangents environment, not in ntklab's (it imports neither ntklab nor
pydantic), on the cases fixture_plans.py writes from ntklab: a model config and its plan, which
this script turns into stax op by op (`stax_of_plan`), so the network is described once, by
ntklab's plan.

    bash tests/reference/make_nt_fixtures.sh          # creates the environment, runs both, writes the file

The tests (tests/analytic/test_analytic_fixtures.py) rebuild each case's plan in ntklab, check it
is the stored one, and compare. The file holds, per case, inputs x1 (n1, ...) and x2 (n2, ...) and
float64 kernels nngp/ntk (n1, n2) and nngp_11/ntk_11 (n1, n1). Deterministic: inputs come from a
fixed seed, drawn in the order of the cases.
"""

import json
import sys
import unittest.mock
from pathlib import Path

sys.modules["neural_tangents.experimental"] = unittest.mock.MagicMock()  # avoids tensorflow

import jax

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_platforms", "cpu")

import numpy as np
from neural_tangents import stax

OUT = Path(__file__).resolve().parent / "nt_fixtures.npz"


def act_layer(name):
    return {"relu": stax.Relu(), "erf": stax.Erf(), "gelu": stax.Gelu(approximate=False)}[name]


def init_kwargs(op):
    return {"W_std": op["w_std"], "b_std": op["b_std"], "parameterization": op["parameterization"]}


def stax_of_plan(ops):
    """The stax network of a serialized plan: ntklab's `layers` ops, every field explicit."""
    layers = []
    for o in ops:
        kind = o["op"]
        if kind == "dense":
            layers.append(stax.Dense(o["out"], **init_kwargs(o)))
        elif kind == "conv":
            assert o["groups"] == 1, "stax has no grouped convolutions"
            layers.append(stax.Conv(o["out"], tuple(o["kernel_size"]), strides=tuple(o["strides"]),
                                    padding=o["padding"], **init_kwargs(o)))
        elif kind == "act":
            layers.append(act_layer(o["name"]))
        elif kind == "avg_pool":
            layers.append(stax.AvgPool(tuple(o["window"]), strides=tuple(o["strides"]), padding="VALID"))
        elif kind == "global_avg_pool":
            layers.append(stax.GlobalAvgPool())
        elif kind == "flatten":
            layers.append(stax.Flatten())
        elif kind in ("sum", "concat"):
            branches = [stax_of_plan(b) if b else stax.Identity() for b in o["branches"]]
            join = stax.FanInSum() if kind == "sum" else stax.FanInConcat(axis=-1)
            layers += [stax.FanOut(len(branches)), stax.parallel(*branches), join]
        else:
            raise ValueError(f"no stax layer for {kind}")
    return stax.serial(*layers)


def main():
    rng = np.random.default_rng(20240605)
    arrays = {}
    index = []
    for case in json.loads(Path(sys.argv[1]).read_text()):
        name, shape, n1, n2 = case["name"], tuple(case["input_shape"]), case["n1"], case["n2"]
        net = stax_of_plan(case["plan"])
        kernel_fn = jax.jit(net[2], static_argnames="get")
        x1 = rng.normal(size=(n1, *shape))
        x2 = rng.normal(size=(n2, *shape))
        k12 = kernel_fn(x1, x2, get=("nngp", "ntk"))
        k11 = kernel_fn(x1, None, get=("nngp", "ntk"))
        arrays[f"{name}/x1"], arrays[f"{name}/x2"] = x1, x2
        arrays[f"{name}/nngp"], arrays[f"{name}/ntk"] = np.asarray(k12.nngp), np.asarray(k12.ntk)
        arrays[f"{name}/nngp_11"], arrays[f"{name}/ntk_11"] = np.asarray(k11.nngp), np.asarray(k11.ntk)
        assert arrays[f"{name}/ntk"].dtype == np.float64
        index.append({key: case[key] for key in ("name", "description", "input_shape", "plan")})
        print(f"{name:32s} ntk[0,0]={float(k12.ntk[0, 0]):.6g}", file=sys.stderr)
    import importlib.metadata as md

    meta = {"neural_tangents": md.version("neural-tangents"), "jax": jax.__version__, "numpy": np.__version__}
    arrays["cases"] = np.array(json.dumps(index))
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(index)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
