"""Every spec shipped in specs/ loads, validates and expands into runs, each planned once."""

import pytest
from conftest import SPECS

from ntklab.spec.load import load_spec
from ntklab.tasks import registry

SHIPPED = sorted(SPECS.glob("*.yaml"))


def test_specs_are_shipped():
    assert {"quickstart", "taylor_cnn_small", "ghorbani_fig1_small"} <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_a_shipped_spec_expands_into_runs(path):
    spec = load_spec(path, tasks=registry)
    assert spec.runs, f"{path.name} expands into no runs"
    keys = [run.key for run in spec.runs]
    assert len(keys) == len(set(keys)), f"{path.name} plans a run twice"
