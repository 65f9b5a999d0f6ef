"""Write neural-tangents' NNGP and NTK values for a set of architectures to nt_fixtures.npz.

Runs in the pinned neural-tangents environment, not in ntklab's (it imports neither ntklab nor
pydantic):

    bash tests/reference/make_nt_fixtures.sh          # creates the environment, runs this, writes the file

Each case is either a model config of ntklab (engine/config.py: the architecture is rebuilt here
in stax, by hand, from the docstrings of the configs and models.py) or a list of layer ops (the
analytic plan ops of engine/analytic.py, for layers no model config has yet: strides, residual
sums). The tests (tests/analytic/test_fixtures.py) rebuild each case in ntklab and compare.
The file holds, per case, inputs x1 (n1, ...) and x2 (n2, ...) and float64 kernels
nngp/ntk (n1, n2) and nngp_11/ntk_11 (n1, n1). Deterministic: inputs come from a fixed seed.
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


def init_kwargs(d):
    return {
        "W_std": d.get("w_std", 1.0),
        "b_std": d.get("b_std"),
        "parameterization": d.get("parameterization", "standard"),
    }


def stax_of_config(c):
    """The stax network of an ntklab model config (dict), following engine/models.py."""
    kw = init_kwargs(c)
    act = act_layer(c.get("activation", "relu"))
    arch = c["arch"]
    if arch == "mlp":
        layers = [stax.Flatten()]
        for _ in range(c.get("depth", 2)):
            layers += [stax.Dense(c.get("width", 512), **kw), act]
        return stax.serial(*layers, stax.Dense(1, **kw))
    if arch == "cnn":
        k = c.get("kernel_size", 3)
        layers = []
        for _ in range(c.get("depth", 4)):
            layers += [stax.Conv(c.get("channels", 128), (k, k), padding=c.get("padding", "VALID"), **kw), act]
        layers.append(stax.GlobalAvgPool() if c.get("readout", "gap") == "gap" else stax.Flatten())
        return stax.serial(*layers, stax.Dense(1, **kw))
    if arch == "lenet5":
        pool = stax.AvgPool((2, 2), strides=(2, 2), padding="VALID")
        return stax.serial(
            stax.Conv(6, (5, 5), padding="SAME", **kw), act, pool,
            stax.Conv(16, (5, 5), padding="SAME", **kw), act, pool, stax.Flatten(),
            stax.Dense(120, **kw), act, stax.Dense(84, **kw), act, stax.Dense(1, **kw),
        )  # fmt: skip
    if arch == "myrtle5":
        ch = c.get("channels", 128)
        pool = stax.AvgPool((2, 2), strides=(2, 2), padding="VALID")

        def conv():
            return stax.Conv(ch, (3, 3), padding="SAME", **kw)

        return stax.serial(
            conv(), act, conv(), act, pool, conv(), act, pool, conv(), act, stax.GlobalAvgPool(), stax.Dense(1, **kw)
        )
    raise ValueError(arch)


def stax_of_ops(ops):
    """The stax network of a list of plan ops (dicts with an "op" key, see tests/analytic/cases.py)."""
    layers = []
    for o in ops:
        kind = o["op"]
        if kind == "dense":
            layers.append(stax.Dense(o["out"], **init_kwargs(o)))
        elif kind == "conv":
            k = tuple(o["kernel_size"])
            layers.append(
                stax.Conv(o["out"], k, strides=tuple(o.get("strides", (1, 1))), padding=o["padding"], **init_kwargs(o))
            )
        elif kind == "act":
            layers.append(act_layer(o["name"]))
        elif kind == "avg_pool":
            layers.append(stax.AvgPool(tuple(o["window"]), strides=tuple(o["strides"]), padding="VALID"))
        elif kind == "gap":
            layers.append(stax.GlobalAvgPool())
        elif kind == "flatten":
            layers.append(stax.Flatten())
        elif kind == "residual":
            branches = [stax_of_ops(b) if b else stax.Identity() for b in o["branches"]]
            layers += [stax.FanOut(len(branches)), stax.parallel(*branches), stax.FanInSum()]
        else:
            raise ValueError(kind)
    return stax.serial(*layers)


def cases():
    """(name, kind, description, input_shape, n1, n2)."""
    out = []
    # Fully connected: ReLU and erf, depth 1-3, with and without bias, NTK parameterization.
    for act in ("relu", "erf"):
        for depth in (1, 2, 3):
            for b_std in (None, 0.2):
                c = {"arch": "mlp", "depth": depth, "width": 64, "activation": act, "parameterization": "ntk",
                         "w_std": 1.3, "b_std": b_std}  # fmt: skip
                out.append((f"mlp_{act}_d{depth}_{'bias' if b_std else 'nobias'}", "config", c, (10,), 5, 4))
    # Standard parameterization (width-dependent NTK), GeLU, image inputs to an MLP.
    out.append(("mlp_relu_d2_standard_bias", "config",
                {"arch": "mlp", "depth": 2, "width": 32, "activation": "relu", "parameterization": "standard",
                     "w_std": 1.4, "b_std": 0.1}, (10,), 5, 4))  # fmt: skip
    out.append(("mlp_erf_d3_standard_nobias", "config",
                {"arch": "mlp", "depth": 3, "width": 48, "activation": "erf", "parameterization": "standard", "w_std": 0.9},
                (10,), 5, 4))  # fmt: skip
    out.append(("mlp_gelu_d2_bias", "config",
                {"arch": "mlp", "depth": 2, "width": 64, "activation": "gelu", "parameterization": "ntk", "w_std": 1.2, "b_std": 0.3},
                (10,), 5, 4))  # fmt: skip
    out.append(("mlp_relu_d2_images", "config",
                {"arch": "mlp", "depth": 2, "width": 64, "activation": "relu", "parameterization": "ntk", "b_std": 0.1},
                (6, 6, 2), 4, 3))  # fmt: skip
    # Ghorbani's multi-layer NTKs: ReLU, W_std = 1, b_std = 0, 1-3 hidden layers.
    for depth in (1, 2, 3):
        out.append((f"ghorbani_ntk_{depth + 1}layers", "config",
                    {"arch": "mlp", "depth": depth, "width": 512, "activation": "relu", "parameterization": "ntk", "w_std": 1.0,
                         "b_std": 0.0}, (12,), 5, 4))  # fmt: skip
    # CNNs: GAP and flatten readouts, SAME and VALID.
    for readout in ("gap", "flatten"):
        for padding in ("SAME", "VALID"):
            out.append((f"cnn_relu_{readout}_{padding.lower()}", "config",
                        {"arch": "cnn", "depth": 2, "channels": 8, "kernel_size": 3, "padding": padding, "readout": readout,
                             "activation": "relu", "parameterization": "ntk", "w_std": 1.4, "b_std": 0.1},
                        (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("cnn_erf_gap_same_nobias", "config",
                {"arch": "cnn", "depth": 3, "channels": 8, "padding": "SAME", "readout": "gap", "activation": "erf",
                     "parameterization": "ntk", "w_std": 1.1}, (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("cnn_relu_gap_same_standard", "config",
                {"arch": "cnn", "depth": 2, "channels": 6, "padding": "SAME", "readout": "gap", "activation": "relu",
                     "parameterization": "standard", "w_std": 1.4, "b_std": 0.2}, (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("cnn_gelu_flatten_valid_k2", "config",
                {"arch": "cnn", "depth": 2, "channels": 8, "kernel_size": 2, "padding": "VALID", "readout": "flatten",
                     "activation": "gelu", "parameterization": "ntk", "b_std": 0.1}, (6, 6, 2), 3, 2))  # fmt: skip
    # Myrtle-5 on 8x8 inputs; LeNet-5.
    out.append(("myrtle5_relu", "config",
                {"arch": "myrtle5", "channels": 16, "activation": "relu", "parameterization": "ntk", "w_std": 1.41421356,
                     "b_std": None}, (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("myrtle5_erf_standard_bias", "config",
                {"arch": "myrtle5", "channels": 16, "activation": "erf", "parameterization": "standard", "w_std": 1.2,
                     "b_std": 0.1}, (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("lenet5_relu", "config",
                {"arch": "lenet5", "activation": "relu", "parameterization": "ntk", "b_std": 0.1}, (8, 8, 1), 3, 2))
    # Layers no model config has yet: a residual block, strided convolutions.
    conv = {"op": "conv", "out": 8, "kernel_size": [3, 3], "padding": "SAME", "w_std": 1.3, "b_std": 0.1, "parameterization": "ntk"}
    relu = {"op": "act", "name": "relu"}
    out.append(("residual_block", "ops", [
        conv,
        {"op": "residual", "branches": [[relu, conv, relu, conv], []]},
        relu, {"op": "gap"}, {"op": "dense", "out": 1, "w_std": 1.0, "b_std": 0.1, "parameterization": "ntk"},
    ], (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("residual_projection_pool", "ops", [
        conv, {"op": "act", "name": "erf"},
        {"op": "residual", "branches": [[conv, relu, dict(conv, strides=[2, 2])],
                                      [dict(conv, kernel_size=[1, 1], strides=[2, 2], padding="VALID")]]},
        relu, {"op": "avg_pool", "window": [2, 2], "strides": [1, 1]}, {"op": "flatten"},
        {"op": "dense", "out": 1, "w_std": 1.0, "b_std": None, "parameterization": "ntk"},
    ], (8, 8, 2), 3, 2))  # fmt: skip
    out.append(("strided_convs", "ops", [
        dict(conv, strides=[2, 2]), relu,
        dict(conv, padding="VALID", strides=[2, 1], parameterization="standard"), relu,
        {"op": "flatten"}, {"op": "dense", "out": 1, "w_std": 1.0, "b_std": 0.1, "parameterization": "standard"},
    ], (9, 8, 2), 3, 2))  # fmt: skip
    return out


def main():
    rng = np.random.default_rng(20240605)
    arrays = {}
    index = []
    for name, kind, desc, shape, n1, n2 in cases():
        net = stax_of_config(desc) if kind == "config" else stax_of_ops(desc)
        kernel_fn = jax.jit(net[2], static_argnames="get")
        x1 = rng.normal(size=(n1, *shape))
        x2 = rng.normal(size=(n2, *shape))
        k12 = kernel_fn(x1, x2, get=("nngp", "ntk"))
        k11 = kernel_fn(x1, None, get=("nngp", "ntk"))
        arrays[f"{name}/x1"], arrays[f"{name}/x2"] = x1, x2
        arrays[f"{name}/nngp"], arrays[f"{name}/ntk"] = np.asarray(k12.nngp), np.asarray(k12.ntk)
        arrays[f"{name}/nngp_11"], arrays[f"{name}/ntk_11"] = np.asarray(k11.nngp), np.asarray(k11.ntk)
        assert arrays[f"{name}/ntk"].dtype == np.float64
        index.append({"name": name, "kind": kind, "description": desc, "input_shape": list(shape)})
        print(f"{name:32s} ntk[0,0]={float(k12.ntk[0, 0]):.6g}", file=sys.stderr)
    import importlib.metadata as md

    meta = {"neural_tangents": md.version("neural-tangents"), "jax": jax.__version__, "numpy": np.__version__}
    arrays["cases"] = np.array(json.dumps(index))
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(index)} cases)", file=sys.stderr)


if __name__ == "__main__":
    main()
