"""ntklab's default XLA flags: added for the jaxlib versions that know them, never over the user's."""

import importlib.metadata
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ntklab
from test_cli_runner import sql, sqlite_url

from ntklab.xla_flags import JAXLIB_WITH_YNN_FUSIONS, WITHOUT_YNN_FUSIONS, default_xla_flags

CHECKED = sorted(JAXLIB_WITH_YNN_FUSIONS)[0]


def test_the_flag_is_added_to_the_users_other_flags():
    environ = {}
    default_xla_flags(environ, CHECKED)
    assert environ == {"XLA_FLAGS": WITHOUT_YNN_FUSIONS}
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    default_xla_flags(environ, CHECKED)
    assert environ["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {WITHOUT_YNN_FUSIONS}"


def test_a_users_ynn_setting_and_unchecked_jaxlib_versions_are_left_alone():
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    default_xla_flags(mine, CHECKED)
    assert mine == {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    for version in ("0.6.0", "99.0.0"):
        environ = {}
        default_xla_flags(environ, version)
        assert environ == {}


@pytest.mark.skipif(importlib.metadata.version("jaxlib") not in JAXLIB_WITH_YNN_FUSIONS,
                    reason="the installed jaxlib is not one the flag was checked with")
def test_the_installed_jaxlib_accepts_the_flag_and_computes_the_same_convolution():
    """XLA aborts on unknown flags: the flag must parse, and change speed, not results beyond rounding."""
    script = (
        "import jax, jax.numpy as jnp, numpy as np\n"
        "x = jax.random.normal(jax.random.PRNGKey(0), (4, 10, 10, 8))\n"
        "k = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 8, 16))\n"
        "y = jax.lax.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
        "print(np.asarray(y).tobytes().hex())\n"
    )
    outputs = {}
    for flags in ("", WITHOUT_YNN_FUSIONS):
        env = {**os.environ, "XLA_FLAGS": flags, "JAX_PLATFORMS": "cpu"}
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[flags] = result.stdout.strip()
    plain, flagged = (np.frombuffer(bytes.fromhex(outputs[f]), np.float32) for f in ("", WITHOUT_YNN_FUSIONS))
    np.testing.assert_allclose(flagged, plain, rtol=1e-4, atol=1e-4)


def test_a_run_records_the_xla_flags_it_ran_with(home):
    (home / "probe.yaml").write_text("name: flags\ngroups:\n  p:\n    task: probe\n    steps: 2\n")
    ntklab("run", "probe.yaml", home=home, check=True)
    (provenance,) = [json.loads(p) if isinstance(p, str) else p for (p,) in sql(sqlite_url(home),
                                                                                   "select provenance from runs")]
    expected = WITHOUT_YNN_FUSIONS if importlib.metadata.version("jaxlib") in JAXLIB_WITH_YNN_FUSIONS else None
    assert provenance["xla_flags"] == expected
