"""What a run records about where its numbers came from."""

import json

from conftest import ntklab
from test_cli_runner import sql, sqlite_url

FLAGS = "--xla_force_host_platform_device_count=1"


def test_a_run_records_its_xla_flags_and_versions(home, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", FLAGS)
    (home / "probe.yaml").write_text("name: flags\ngroups:\n  p:\n    task: probe\n    steps: 2\n")
    ntklab("run", "probe.yaml", home=home, check=True)
    (raw,) = [p for (p,) in sql(sqlite_url(home), "select provenance from runs")]
    provenance = json.loads(raw) if isinstance(raw, str) else raw
    assert provenance["xla_flags"] == FLAGS
    assert provenance["packages"]["jax"] and provenance["packages"]["ntklab"]
