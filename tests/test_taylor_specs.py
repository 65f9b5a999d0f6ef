"""The Taylorized-training specs and expansion points through the real CLI."""

import json

from conftest import SPECS, ntklab
from test_cli_runner import sql, sqlite_url

TRAIN = """\
      task: train
      seed: 3
      data: {dataset: synthetic, n_train: 32, n_test: 16, dim: 8, num_classes: 3}
      model: {arch: mlp, depth: 1, width: 8, activation: gelu, b_std: 0.1}
      train: {optimizer: {name: sgd, lr: 0.5}, batch_size: 16, epochs: 2, eval_every_steps: 2}
"""

AROUND_TRAINED = """\
name: {name}
defaults:
  seed: 4
  data: {{dataset: synthetic, n_train: 32, n_test: 16, dim: 8, num_classes: 3}}
  model: {{arch: mlp, depth: 1, width: 8, activation: gelu, b_std: 0.1}}
groups:
  taylor:
    task: train
    train: {{optimizer: {{name: sgd, lr: 0.2}}, batch_size: 16, epochs: 1, eval_every_steps: 1,
             expansion_order: {order}, compare_to_full: false}}
    expansion_point:
{train}"""


def write(home, name, order):
    (home / f"{name}.yaml").write_text(AROUND_TRAINED.format(name=name, order=order, train=TRAIN))
    return f"{name}.yaml"


def test_expansion_around_a_trained_checkpoint_runs_it_first_and_reuses_it(home):
    ntklab("run", write(home, "linear", 1), home=home, check=True)
    url = sqlite_url(home)
    rows = sql(url, "select group_name, status, attempts from runs order by started_at")
    assert rows == [("taylor.expansion_point", "done", 1), ("taylor", "done", 1)]
    (upstream_key,) = [k for (k,) in sql(url, "select key from runs where group_name = 'taylor.expansion_point'")]

    second = ntklab("run", write(home, "quadratic", 2), home=home, check=True)
    assert "1 runs to execute" in second.stderr or "1 run to execute" in second.stderr
    assert sql(url, "select count(*), sum(attempts) from runs where group_name = 'taylor.expansion_point'") == [(1, 1)]
    links = sql(url, "select u.name, r.key from run_upstreams u join runs r on r.id = u.upstream_run_id")
    assert links == [("expansion_point", upstream_key)] * 2, "both expansions use the one trained network"

    shown = json.loads(ntklab("query", "-e", "quadratic", "-c", "train.expansion_order,dist_init", "--format", "json",
                              home=home, check=True).stdout)
    assert sorted(row["train.expansion_order"] for row in shown) == [0, 2], "the upstream run is a member too"


def test_the_small_study_shows_agreement_improving_with_the_order(home):
    """specs/taylor_cnn_small.yaml as shipped: at the end of training, each order's test logits are
    closer to the network's than the order below (orders 3 and 4 nearly tie: the CNN is piecewise a
    degree-4 polynomial in its weights), and the higher orders agree with its predicted classes more
    often than the linearized network."""
    result = ntklab("run", str(SPECS / "taylor_cnn_small.yaml"), home=home, check=True)
    assert "5 runs to execute" in result.stderr
    rows = json.loads(ntklab("query", "-e", "taylor_cnn_small", "-c", "train.expansion_order,fn_distance,agreement",
                             "--format", "json", home=home, check=True).stdout)
    by_order = {row["train.expansion_order"]: row for row in rows}
    assert sorted(by_order) == [0, 1, 2, 3, 4]
    assert by_order[0]["fn_distance"] is None and by_order[0]["agreement"] is None
    distance = [by_order[k]["fn_distance"] for k in (1, 2, 3, 4)]
    agreement = [by_order[k]["agreement"] for k in (1, 2, 3, 4)]
    assert distance[0] > distance[1] > distance[2] > 0, distance
    assert distance[3] <= 1.01 * distance[2], distance
    assert min(agreement[2:]) > agreement[0], agreement
    assert all(0.9 < a <= 1 for a in agreement), agreement


def test_the_full_scale_specs_plan_five_runs_and_refuse_to_run_without_cifar10(home, tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    for spec in ("taylor_cnn", "taylor_wrn"):
        plan = ntklab("plan", str(SPECS / f"{spec}.yaml"), home=home, check=True)
        assert f"{spec}: 5 runs" in plan.stdout + plan.stderr
        result = ntklab("run", str(SPECS / f"{spec}.yaml"), "--set", f"data.root={empty}", home=home)
        assert result.returncode == 2
        assert "cifar-10-python.tar.gz" in result.stderr and str(empty) in result.stderr
        assert "ntklab data fetch cifar10" in result.stderr
        assert "Traceback" not in result.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
