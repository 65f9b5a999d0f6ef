"""The README's notebook example, executed as written against a small experiment (a network
trained over two seeds and its empirical NTK): into pandas, one plot, a kernel store by run key."""

import re

import numpy as np
import pytest

from conftest import REPO, ntklab
from ntklab.errors import DatabaseError, UsageError
from ntklab.reports.api import load_artifact, load_experiment

DATA = "{dataset: synthetic, n_train: 40, n_test: 16, dim: 16, image_shape: [4, 4, 1], num_classes: 3}"
SPEC = f"""\
name: kernels_quickstart
defaults: {{data: {DATA}}}
groups:
  net:
    task: train
    model: {{arch: mlp, depth: 1, width: 16}}
    train: {{loss: mse, optimizer: {{name: sgd, lr: 0.1}}, epochs: 3, batch_size: 8, eval_every_steps: 5}}
    sweep: {{grid: {{seed: [0, 1]}}}}
  ntk:
    task: kernel
    kernel: {{kind: empirical, model: {{arch: mlp, depth: 1, width: 16}}, trace_outputs: true}}
    block_size: 16
    psd_check: true
"""


@pytest.fixture(scope="module")
def notebook_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "spec.yaml").write_text(SPEC)
    ntklab("run", "spec.yaml", home=home, check=True)
    return home


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("### From a notebook"):]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_readme_notebook_example_runs(notebook_home, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(notebook_home.parent)
    code = readme_example().replace('home=".ntklab"', f'home="{notebook_home}"')
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)

    runs = namespace["runs"]
    assert len(runs) == 3 and set(runs["group"]) == {"net", "ntk"} and set(runs["status"]) == {"done"}
    assert runs.loc[runs["group"] == "net", "test_accuracy"].notna().all()
    lines = namespace["ax"].get_lines()
    assert [line.get_label() for line in lines] == ["net"]
    steps, values = lines[0].get_data()
    curves = namespace["curves"]
    by_step = curves[curves["name"] == "test_accuracy"].groupby("step")["value"].mean()
    assert list(steps) == list(by_step.index) and np.allclose(values, by_step.to_numpy()), "the mean of the seeds"

    K = namespace["K"]
    assert K.shape == (40, 40) and np.allclose(K, K.T)
    summaries = load_experiment("kernels_quickstart", home=notebook_home).summaries
    logged = {s["name"]: s["last"] for s in summaries if s["key"] == namespace["kernel_run"]}
    assert np.isclose(np.linalg.eigvalsh(K)[0], logged["min_eigenvalue"], rtol=1e-6, atol=1e-9), \
        "the store read by run key is the kernel the run measured"


def test_load_artifact_checks_what_it_reads(notebook_home):
    exp = load_experiment("kernels_quickstart", home=notebook_home)
    key = next(r["key"] for r in exp.runs if r["task"] == "kernel")
    with pytest.raises(UsageError, match="has no artifact 'nope'; it has: kernel"):
        load_artifact(key[:8], "nope", home=notebook_home)
    store = load_artifact(key[:8], "kernel", home=notebook_home)
    block = next(p for p in (store.path).rglob("*") if p.is_file() and p.stat().st_size > 0 and "c" in p.parts)
    original = block.read_bytes()
    block.write_bytes(original + b"\0")
    try:
        with pytest.raises(DatabaseError, match="differs from its record"):
            load_artifact(key[:8], "kernel", home=notebook_home)
    finally:
        block.write_bytes(original)
