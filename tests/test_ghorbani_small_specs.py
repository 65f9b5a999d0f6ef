"""The small variants of Ghorbani et al.'s experiments, run through the CLI: each shows the paper's
qualitative result, that the network degrades less than RF, NT and their kernel limits as the
perturbation grows. Trends are asserted across the ends of each sweep, with margins far from
the measured values (quoted in each spec's description)."""

import json
from collections import defaultdict

from conftest import SPECS, ntklab


def run_spec(home, name: str) -> None:
    ntklab("run", str(SPECS / f"{name}.yaml"), home=home, check=True, timeout=1200)


def figure(home, name: str, *series: str) -> dict[tuple, dict]:
    """The figure's means as {series values: {x: mean}}; every point aggregates all its runs."""
    result = ntklab("query", "--paper", name, "-f", "json", home=home, check=True)
    rows = json.loads(result.stdout)
    x = [c for c in rows[0] if c not in (*series, "mean", "std", "n", "missing")][0]
    found: dict[tuple, dict] = defaultdict(dict)
    for row in rows:
        assert row["n"] >= 1 and row["missing"] == "", row
        found[tuple(row[s] for s in series)][row[x]] = row["mean"]
    return found


def test_spiked_covariates_the_network_suffers_least_as_the_spike_fades(home):
    """Risk (lower is better) as kappa falls from 0.6 to 0, the spike hidden in the bulk."""
    run_spec(home, "ghorbani_spiked_small")
    trained = figure(home, "ghorbani_spiked_small:risk", "group")
    kernels = figure(home, "ghorbani_spiked_small:risk_krr", "kernel.data.n_train", "group")
    curves = {**{g: trained[(g,)] for g in ("rf", "nt")}, **{f"{g} n={n}": c for (n, g), c in kernels.items()}}
    assert len(curves) == 6
    nn = trained[("nn",)]
    growth = nn[0.0] - nn[0.6]
    assert growth > 0  # the network too is hurt
    for name, curve in curves.items():
        assert curve[0.0] - curve[0.6] > 3 * growth, name
        assert curve[0.0] > 3 * nn[0.0], name

