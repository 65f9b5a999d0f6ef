"""The kernel, krr and ridge_cg tasks through the real CLI: upstream runs, directory artifacts,
reuse of a kernel by another experiment."""

import json
import sqlite3

from conftest import ntklab

SPEC = """\
name: {name}
groups:
  krr:
    task: krr
    kernel:
      task: kernel
      data: {{dataset: synthetic, n_train: 48, n_test: 16, dim: 16, image_shape: [4, 4, 1], num_classes: 3}}
      kernel:
        kind: empirical
        trace_outputs: true
        at:
          task: train
          data: {{dataset: synthetic, n_train: 48, n_test: 16, dim: 16, image_shape: [4, 4, 1], num_classes: 3}}
          model: {{arch: mlp, depth: 1, width: 16}}
          train: {{loss: mse, optimizer: {{name: sgd, lr: 0.1}}, epochs: 2, batch_size: 16}}
      block_size: 16
      psd_check: true
    ridge: {ridge}
"""


def test_krr_on_the_ntk_of_a_trained_network_and_reuse_of_the_kernel(home):
    (home / "a.yaml").write_text(SPEC.format(name="first", ridge="{logspace: [-3, 0, 4]}"))
    ntklab("run", "a.yaml", home=home, check=True)
    db = sqlite3.connect(home / "ntklab.db")
    rows = dict(db.execute("select group_name, status from runs"))
    assert rows == {"krr": "done", "krr.kernel": "done", "krr.kernel.at": "done"}
    path, kind, meta = db.execute("select a.path, a.kind, a.metadata from artifacts a join runs r on r.id = a.run_id "
                                  "where r.group_name = 'krr.kernel' and a.name = 'kernel'").fetchone()
    meta = json.loads(meta) if isinstance(meta, str) else meta
    assert kind == "zarr-kernel" and meta["layout"] == "scalar" and meta["model_sha256"]
    assert (home / path / "zarr.json").exists()
    steps = db.execute("select count(*) from metrics m join runs r on r.id = m.run_id "
                       "where r.group_name = 'krr' and m.name = 'loo_mse'").fetchone()
    assert steps == (4,)
    # another experiment with another ridge sweep reuses the kernel (and the trained network)
    (home / "b.yaml").write_text(SPEC.format(name="second", ridge="[0.01, 0.1]"))
    second = ntklab("run", "b.yaml", home=home, check=True)
    assert "1 runs to execute" in second.stderr or "1 run to execute" in second.stderr, second.stderr
    assert db.execute("select count(*) from runs where group_name like 'krr.kernel%'").fetchone() == (2,)
