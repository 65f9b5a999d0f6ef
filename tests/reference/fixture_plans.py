"""The cases of nt_fixtures.npz and their plans, as JSON on stdout, for make_nt_fixtures.py.

Runs in ntklab's environment: each case is a model config (engine/config.py; `arch: layers` for
networks no named architecture writes), and its plan (engine/presets.py) is serialized as `layers`
ops (engine/plan.py:to_layers), which make_nt_fixtures.py turns into stax. The tests
(tests/analytic/test_analytic_fixtures.py) check that each case's plan is still the one the
fixture was made from. Cases are listed in the order their inputs are drawn: new cases go last,
so the inputs and kernels of the earlier ones do not change.

    .venv/bin/python tests/reference/fixture_plans.py > plans.json
"""

import json


from ntklab.engine.config import parse_model_config
from ntklab.engine.plan import to_layers
from ntklab.engine.presets import plan_of


def cases():
    """(name, model config, input_shape, n1, n2)."""
    out = []
    # Fully connected: ReLU and erf, depth 1-3, with and without bias, NTK parameterization.
    for act in ("relu", "erf"):
        for depth in (1, 2, 3):
            for b_std in (None, 0.2):
                c = {"arch": "mlp", "depth": depth, "width": 64, "activation": act, "parameterization": "ntk",
                     "w_std": 1.3, "b_std": b_std}  # fmt: skip
                out.append((f"mlp_{act}_d{depth}_{'bias' if b_std else 'nobias'}", c, (10,), 5, 4))
    # Standard parameterization (width-dependent NTK), GeLU, image inputs to an MLP.
    out.append(("mlp_relu_d2_standard_bias",
                {"arch": "mlp", "depth": 2, "width": 32, "activation": "relu", "parameterization": "standard",
                 "w_std": 1.4, "b_std": 0.1}, (10,), 5, 4))  # fmt: skip
    out.append(("mlp_erf_d3_standard_nobias",
                {"arch": "mlp", "depth": 3, "width": 48, "activation": "erf", "parameterization": "standard", "w_std": 0.9},
                (10,), 5, 4))  # fmt: skip
    out.append(("mlp_gelu_d2_bias",
                {"arch": "mlp", "depth": 2, "width": 64, "activation": "gelu", "parameterization": "ntk", "w_std": 1.2,
                 "b_std": 0.3}, (10,), 5, 4))  # fmt: skip
    out.append(("mlp_relu_d2_images",
                {"arch": "mlp", "depth": 2, "width": 64, "activation": "relu", "parameterization": "ntk", "b_std": 0.1},
                (6, 6, 2), 4, 3))  # fmt: skip
    # Ghorbani's multi-layer NTKs: ReLU, W_std = 1, b_std = 0, 1-3 hidden layers.
    for depth in (1, 2, 3):
        out.append((f"ghorbani_ntk_{depth + 1}layers",
                    {"arch": "mlp", "depth": depth, "width": 512, "activation": "relu", "parameterization": "ntk",
                     "w_std": 1.0, "b_std": 0.0}, (12,), 5, 4))  # fmt: skip
    # CNNs: GAP and flatten readouts, SAME and VALID.
    for readout in ("gap", "flatten"):
        for padding in ("SAME", "VALID"):
            out.append((f"cnn_relu_{readout}_{padding.lower()}",
                        {"arch": "cnn", "depth": 2, "channels": 8, "kernel_size": 3, "padding": padding,
                         "readout": readout, "activation": "relu", "parameterization": "ntk", "w_std": 1.4,
                         "b_std": 0.1}, (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("cnn_erf_gap_same_nobias",
                {"arch": "cnn", "depth": 3, "channels": 8, "padding": "SAME", "readout": "gap", "activation": "erf",
                 "parameterization": "ntk", "w_std": 1.1}, (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("cnn_relu_gap_same_standard",
                {"arch": "cnn", "depth": 2, "channels": 6, "padding": "SAME", "readout": "gap", "activation": "relu",
                 "parameterization": "standard", "w_std": 1.4, "b_std": 0.2}, (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("cnn_gelu_flatten_valid_k2",
                {"arch": "cnn", "depth": 2, "channels": 8, "kernel_size": 2, "padding": "VALID", "readout": "flatten",
                 "activation": "gelu", "parameterization": "ntk", "b_std": 0.1}, (6, 6, 2), 3, 2))  # fmt: skip
    # Myrtle-5 on 8x8 inputs; LeNet-5.
    out.append(("myrtle5_relu",
                {"arch": "myrtle5", "channels": 16, "activation": "relu", "parameterization": "ntk",
                 "w_std": 1.41421356, "b_std": None}, (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("myrtle5_erf_standard_bias",
                {"arch": "myrtle5", "channels": 16, "activation": "erf", "parameterization": "standard", "w_std": 1.2,
                 "b_std": 0.1}, (8, 8, 3), 3, 2))  # fmt: skip
    out.append(("lenet5_relu", {"arch": "lenet5", "activation": "relu", "parameterization": "ntk", "b_std": 0.1},
                (8, 8, 1), 3, 2))  # fmt: skip
    # Written as layers: a residual block, strided convolutions.
    conv = {"op": "conv", "out": 8, "kernel_size": [3, 3], "padding": "SAME", "w_std": 1.3, "b_std": 0.1,
            "parameterization": "ntk"}  # fmt: skip
    relu = {"op": "act", "name": "relu"}
    readout = {"op": "dense", "out": 1, "w_std": 1.0, "b_std": 0.1, "parameterization": "ntk"}
    out.append(("residual_block", {"arch": "layers", "layers": [
        conv, {"op": "sum", "branches": [[relu, conv, relu, conv], []]}, relu, {"op": "global_avg_pool"}, readout,
    ]}, (6, 6, 2), 3, 2))  # fmt: skip
    out.append(("residual_projection_pool", {"arch": "layers", "layers": [
        conv, {"op": "act", "name": "erf"},
        {"op": "sum", "branches": [[conv, relu, dict(conv, strides=[2, 2])],
                                   [dict(conv, kernel_size=[1, 1], strides=[2, 2], padding="VALID")]]},
        relu, {"op": "avg_pool", "window": [2, 2], "strides": [1, 1]}, {"op": "flatten"},
        dict(readout, b_std=None),
    ]}, (8, 8, 2), 3, 2))  # fmt: skip
    out.append(("strided_convs", {"arch": "layers", "layers": [
        dict(conv, strides=[2, 2]), relu,
        dict(conv, padding="VALID", strides=[2, 1], parameterization="standard"), relu,
        {"op": "flatten"}, dict(readout, parameterization="standard"),
    ]}, (9, 8, 2), 3, 2))  # fmt: skip
    out += layers_cases()
    return out


def layers_cases():
    """Networks a user writes as `arch: layers` (model-level defaults, per-layer overrides)."""
    body = {"activation": "relu", "parameterization": "ntk", "w_std": 1.4, "b_std": 0.05}
    conv = {"op": "conv", "out": 8, "kernel_size": 3, "padding": "SAME"}
    return [
        ("layers_cnn_own_readout", {"arch": "layers", **body, "layers": [
            conv, {"op": "act"}, conv, {"op": "act"}, {"op": "global_avg_pool"},
            {"op": "dense", "w_std": 2.0, "b_std": 0.5},
        ]}, (6, 6, 2), 3, 2),
        ("layers_residual_act_gap", {"arch": "layers", **body, "activation": "erf", "layers": [
            conv, {"op": "sum", "branches": [[{"op": "act"}, conv, {"op": "act"}, conv], []]},
            {"op": "act"}, {"op": "global_avg_pool"}, {"op": "dense"},
        ]}, (6, 6, 2), 3, 2),
        ("layers_myrtle_stack", {"arch": "layers", **body, "b_std": None, "layers": [
            {"op": "serial", "repeat": 2, "layers": [conv, {"op": "act"}]}, {"op": "avg_pool"},
            conv, {"op": "act"}, {"op": "avg_pool", "window": 2},
            conv, {"op": "act"}, {"op": "global_avg_pool"}, {"op": "dense"},
        ]}, (8, 8, 3), 3, 2),
        ("layers_concat", {"arch": "layers", **body, "parameterization": "standard", "layers": [
            conv, {"op": "act"},
            {"op": "concat", "branches": [[dict(conv, out=6)], [dict(conv, out=10, kernel_size=1), {"op": "act"},
                                                                 dict(conv, out=10, strides=1)]]},
            dict(conv, kernel_size=[3, 2], strides=[1, 2], padding="VALID"), {"op": "act", "name": "gelu"},
            {"op": "flatten"}, {"op": "dense"},
        ]}, (6, 6, 2), 3, 2),
    ]  # fmt: skip


def main():
    records = []
    for name, config, shape, n1, n2 in cases():
        plan = plan_of(parse_model_config(config))
        records.append({"name": name, "description": config, "input_shape": list(shape), "n1": n1, "n2": n2,
                        "plan": to_layers(plan.ops)})
    print(json.dumps(records))


if __name__ == "__main__":
    main()
