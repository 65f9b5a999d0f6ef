"""Networks written as `arch: layers` through the real CLI: train and kernel runs, and bad
`layers` blocks rejected with exit 2, the line and the layer, before anything is recorded."""

import sqlite3

import pytest

from conftest import ntklab

DATA = "{dataset: synthetic, n_train: 12, n_test: 6, dim: 72, image_shape: [6, 6, 2], num_classes: 2}"
CONV = "{op: conv, out: 4, kernel_size: 3, padding: SAME}"
# the four networks of tests/reference/fixture_plans.py:layers_cases, narrower
NETWORKS = {
    "own_readout": f"[{CONV}, {{op: act}}, {CONV}, {{op: act}}, {{op: global_avg_pool}}, "
                   "{op: dense, w_std: 2.0, b_std: 0.5}]",
    "residual": f"[{CONV}, {{op: sum, branches: [[{{op: act}}, {CONV}, {{op: act}}, {CONV}], []]}}, "
                "{op: act}, {op: global_avg_pool}, {op: dense}]",
    "myrtle": f"[{{op: serial, repeat: 2, layers: [{CONV}, {{op: act}}]}}, {{op: avg_pool}}, {CONV}, {{op: act}}, "
              "{op: global_avg_pool}, {op: dense}]",
    "concat": f"[{CONV}, {{op: act}}, {{op: concat, branches: [[{CONV}], [{{op: conv, out: 2, kernel_size: 1}}]]}}, "
              "{op: conv, out: 4, kernel_size: 2}, {op: act}, {op: flatten}, {op: dense}]",
}


def spec() -> str:
    groups = []
    for name, layers in NETWORKS.items():
        model = f"{{arch: layers, parameterization: ntk, w_std: 1.4, b_std: 0.1, layers: {layers}}}"
        groups.append(f"""\
  train_{name}:
    task: train
    model: {model}
  ntk_{name}:
    task: kernel
    kernel: {{kind: analytic, which: ntk, model: {model}}}
  entk_{name}:
    task: kernel
    kernel: {{kind: empirical, trace_outputs: true, model: {model}}}
""")
    return f"""\
name: layers
defaults:
  data: {DATA}
  train: {{loss: mse, optimizer: {{name: sgd, lr: 0.05}}, epochs: 1, batch_size: 6}}
  block_size: 6
groups:
{"".join(groups)}"""


def test_layers_networks_train_and_give_kernels(home):
    (home / "layers.yaml").write_text(spec())
    ntklab("run", "layers.yaml", home=home, check=True)
    db = sqlite3.connect(home / "ntklab.db")
    status = dict(db.execute("select group_name, status from runs"))
    assert status == {f"{kind}_{name}": "done" for name in NETWORKS for kind in ("train", "ntk", "entk")}
    metrics = {name for (name,) in db.execute("select distinct m.name from metrics m join runs r on r.id = m.run_id "
                                              "where r.group_name = 'train_residual'")}
    assert "test_loss" in metrics and "dist_init/layers.1.weight" in metrics
    kernels = db.execute("select count(*) from artifacts a join runs r on r.id = a.run_id "
                         "where a.name = 'kernel' and r.task = 'kernel'").fetchone()
    assert kernels == (2 * len(NETWORKS),)


BASE = """\
name: bad
defaults:
  data: {dataset: digits}
groups:
  k:
    task: kernel
    kernel:
      kind: analytic
      model:
        arch: layers
        layers:
          - {op: conv, out: 4, kernel_size: 3}
          - {op: act}
LAYER
          - {op: flatten}
          - {op: dense}
"""

# (name, the layer on line 14, text the message must contain)
BAD_LAYERS = [
    ("unknown_op", "          - {op: maxpool}", "'maxpool'"),
    ("mismatched_branches", "          - {op: sum, branches: [[{op: conv, out: 8, kernel_size: 1}], "
                            "[{op: conv, out: 4, kernel_size: 1}]]}", "different channel counts: [4, 8]"),
    ("kernel_of_a_max_pool", "          - {op: max_pool, window: 2}", "layers.2 (max_pool): has no infinite-width kernel"),
]


@pytest.mark.parametrize("name, layer, fragment", BAD_LAYERS, ids=[b[0] for b in BAD_LAYERS])
def test_bad_layers_blocks_exit_2_with_the_line_and_the_layer(home, name, layer, fragment):
    (home / "bad.yaml").write_text(BASE.replace("LAYER", layer))
    result = ntklab("plan", "bad.yaml", home=home)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert fragment in message, result.stderr
    line = 14 if name != "kernel_of_a_max_pool" else 7  # the kernel block: its validator names the layer
    assert f"bad.yaml:{line}" in message, result.stderr
    assert not (home / "ntklab.db").exists() or sqlite3.connect(home / "ntklab.db").execute(
        "select count(*) from runs").fetchone() == (0,)
