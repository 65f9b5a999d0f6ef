"""Bad specs through the real CLI: exit code 2, a message naming the line and the field, and a
database left exactly as it was."""

import sqlite3

import pytest

from conftest import ntklab

GOOD = """\
name: t
defaults:
  data: {dataset: digits}
  train: {optimizer: {name: sgd, lr: 0.1}, batch_size: 32, epochs: 1}
groups:
  a:
    task: train
    model: {arch: mlp, width: 8}
"""

PROBE = """\
name: recorded
groups:
  p: {task: probe, steps: 3}
"""

# (name, spec text, expected line, text the message must contain)
BAD_SPECS = [
    ("invalid_yaml", GOOD.replace("width: 8}", "width: 8"), 9, "invalid YAML"),
    ("tab_indent", GOOD.replace("  a:", "\ta:"), 6, "invalid YAML"),
    ("duplicate_key", GOOD + "name: u\n", 9, "duplicate key 'name'"),
    ("not_a_mapping", "- a\n- b\n", 1, "must be a mapping"),
    ("unknown_top_key", GOOD + "grups: {}\n", 9, "grups: unknown key"),
    ("unknown_nested_key", GOOD.replace("width: 8", "width: 8, wdth: 3"), 8, "model.wdth: unknown key"),
    ("wrong_type", GOOD.replace("width: 8", "width: wide"), 8, "model.width"),
    ("negative_batch_size", GOOD.replace("batch_size: 32", "batch_size: -1"), 4, "train.batch_size"),
    ("zero_learning_rate", GOOD.replace("lr: 0.1", "lr: 0"), 4, "train.optimizer.lr"),
    ("unknown_task", GOOD.replace("task: train", "task: trian"), 7, "'trian'"),
    ("missing_task", GOOD.replace("    task: train\n", ""), 6, "missing `task`"),
    ("unknown_arch", GOOD.replace("arch: mlp", "arch: mpl"), 8, "model.arch"),
    ("unknown_dataset", GOOD.replace("dataset: digits", "dataset: digitz"), 3, "data.dataset"),
    ("missing_required", GOOD.replace("optimizer: {name: sgd, lr: 0.1}, ", ""), 4, "train.optimizer: Field required"),
    ("unknown_default", GOOD.replace("defaults:\n", "defaults:\n  trian: {}\n"), 3, "defaults.trian"),
    ("zip_unequal", GOOD + "sweep:\n  zip:\n    seed: [0, 1]\n    train.epochs: [1]\n", 10, "equal lengths"),
    ("grid_not_a_list", GOOD + "sweep:\n  grid:\n    seed: 3\n", 11, "non-empty list"),
    ("unknown_sweep_kind", GOOD + "sweep:\n  gird: {seed: [1]}\n", 10, "unknown sweep kind 'gird'"),
    ("key_set_twice", GOOD + "sweep:\n  grid: {seed: [1, 2]}\n  cases: [{seed: 3}]\n", 11, "set twice"),
    ("decreasing_milestones",
     GOOD.replace("epochs: 1}", "epochs: 1, schedule: {name: step, milestones_epochs: [5, 2]}}"), 4,
     "strictly increasing"),
    ("figure_unknown_axis", GOOD + "figures:\n  f: {x: train.lrr, y: test_accuracy}\n", 10, "figures.f.x"),
    ("bad_group_name", GOOD.replace("  a:", "  9a:"), 6, "group names"),
    ("alias_bomb", PROBE + "".join(f"x{i}: &x{i} [{', '.join([f'*x{i - 1}' if i else 'v'] * 9)}]\n" for i in range(9)),
     4, "more than 200,000 values"),
    ("nested_too_deep", PROBE.replace("steps: 3}", "steps: 3, seed: " + "[" * 150 + "]" * 150 + "}"), 3,
     "nested deeper than 100 levels"),
    ("merge_of_a_scalar", PROBE.replace("  p: {", "  q: {<<: 3, task: probe}\n  p: {"), 3,
     "merge key (<<) takes a mapping"),
    ("merged_bad_value", PROBE.replace("  p: {task: probe, steps: 3}", "  p: &p {task: probe, steps: 0}\n  q: {<<: *p}"),
     3, "steps"),
    ("not_utf8", PROBE.encode() + b"# caf\xe9\n", 4, "not UTF-8"),
    ("bad_image_shape", GOOD.replace("dataset: digits", "dataset: synthetic, dim: 10, image_shape: [2, 2, 2]"), 3,
     "image_shape"),
]


@pytest.fixture(scope="module")
def recorded_home(tmp_path_factory):
    """A home whose database already holds a finished experiment."""
    home = tmp_path_factory.mktemp("home")
    (home / "probe.yaml").write_text(PROBE)
    ntklab("run", "probe.yaml", home=home, check=True)
    return home


def dump(home) -> list[str]:
    with sqlite3.connect(home / "ntklab.db") as conn:
        return list(conn.iterdump())


@pytest.mark.parametrize("name,text,line,fragment", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_rejected_with_line_and_field(recorded_home, name, text, line, fragment):
    spec = recorded_home / f"{name}.yaml"
    spec.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = dump(recorded_home)
    result = ntklab("run", spec.name, home=recorded_home)
    assert result.returncode == 2, result.stderr
    assert f"{name}.yaml:{line}:" in result.stderr, result.stderr
    assert fragment in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert dump(recorded_home) == before, "a rejected spec must not change the database"


def test_bad_override_is_rejected(recorded_home):
    (recorded_home / "good.yaml").write_text(GOOD)
    before = dump(recorded_home)
    result = ntklab("run", "good.yaml", "--set", "train.batch_size=-4", home=recorded_home)
    assert result.returncode == 2
    assert "train.batch_size" in result.stderr and "--set train.batch_size=-4" in result.stderr
    result = ntklab("run", "good.yaml", "--set", "novalue", home=recorded_home)
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
    assert dump(recorded_home) == before


def test_merge_keys_share_a_block_and_the_mapping_overrides_it(recorded_home):
    (recorded_home / "merged.yaml").write_text("""\
name: merged
groups:
  a: &base {task: probe, steps: 3, seed: 1}
  b: {<<: *base, seed: 2}
  c:
    <<: [{steps: 9, seed: 7}, *base]
    steps: 4
""")
    result = ntklab("plan", "merged.yaml", "--show", home=recorded_home, check=True)
    cells = [[c.strip() for c in line.split("│")] for line in result.stdout.splitlines()]
    rows = {c[2]: c[4:6] for c in cells if len(c) == 7 and c[3] == "new"}
    assert rows == {"a": ["1", "3"], "b": ["2", "3"], "c": ["7", "4"]}, result.stdout


def test_oversized_spec_is_refused_before_it_is_parsed(recorded_home):
    (recorded_home / "huge.yaml").write_text(PROBE + "# " + "x" * (1 << 20) + "\n")
    result = ntklab("plan", "huge.yaml", home=recorded_home, timeout=60)
    assert result.returncode == 2 and "at most 1,048,576 are read" in result.stderr, result.stderr


def test_missing_spec_file(recorded_home):
    result = ntklab("run", "nowhere.yaml", home=recorded_home)
    assert result.returncode == 2
    assert "nowhere.yaml" in result.stderr and "cannot read the spec" in result.stderr
