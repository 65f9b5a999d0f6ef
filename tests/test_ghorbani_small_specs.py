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


def test_cifar2_stand_in_the_network_degrades_least_under_high_frequency_noise(home):
    """Accuracy (higher is better) from tau = 0 to tau = 3: NN against NT and the wide RF by KRR."""
    run_spec(home, "ghorbani_cifar2_rf_small")
    trained = figure(home, "ghorbani_cifar2_rf_small:accuracy", "group")
    rf = figure(home, "ghorbani_cifar2_rf_small:accuracy_rf", "group")[("rf_krr",)]
    nn, nt = trained[("nn",)], trained[("nt",)]
    drop = {name: curve[0.0] - curve[3.0] for name, curve in (("nn", nn), ("nt", nt), ("rf", rf))}
    assert all(curve[0.0] > 0.95 for curve in (nn, nt, rf))  # all fit the clean digits
    assert drop["nn"] > 0.05  # the noise hurts the network too
    assert drop["nt"] > 2 * drop["nn"]
    assert drop["rf"] > drop["nn"]
    assert nn[3.0] > max(nt[3.0], rf[3.0])


def assert_hurt_by_the_noise(curve: dict, clean: float, noisy: float) -> None:
    assert curve[clean] > 0.75  # learns the least perturbed digits (chance: 0.1)
    assert curve[clean] - curve[noisy] > 0.05  # and loses accuracy as the perturbation grows


def test_low_frequency_stand_in_every_depth_and_its_kernel_lose_accuracy_with_the_threshold(home):
    """On 8x8 digits the paper's ordering does not hold (the spec's description says why): the
    kernels lose less than the networks. What the small variant shows is asserted: replacing
    more low frequencies costs every network and every NTK of the same depth accuracy."""
    run_spec(home, "ghorbani_lowfreq_small")
    nets = figure(home, "ghorbani_lowfreq_small:accuracy", "model.depth")
    kernels = figure(home, "ghorbani_lowfreq_small:accuracy_ntk", "kernel.kernel.model.depth")
    assert sorted(nets) == sorted(kernels) == [(1,), (2,), (3,)]
    for depth in nets:
        assert_hurt_by_the_noise(nets[depth], 1, 5)
        assert_hurt_by_the_noise(kernels[depth], 1, 5)


def test_cifar10_stand_in_the_cnn_and_its_cntk_lose_accuracy_with_the_threshold(home):
    """As for the low-frequency spec, the paper's ordering (the CNN loses less than the CNTK) is
    not asserted: on 200 8x8 digits it does not hold (see the spec's description)."""
    run_spec(home, "ghorbani_cifar10_cntk_small")
    cnn = figure(home, "ghorbani_cifar10_cntk_small:accuracy", "group")[("cnn",)]
    cntk = figure(home, "ghorbani_cifar10_cntk_small:accuracy_cntk", "group")[("cntk_krr",)]
    assert_hurt_by_the_noise(cnn, 1, 5)
    assert_hurt_by_the_noise(cntk, 1, 5)
