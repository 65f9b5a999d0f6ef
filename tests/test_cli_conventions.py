"""CLI conventions through the real CLI: --version, -h, the exit codes in the help and the README,
environment variables shown by --help, completion from the database, --format json on plan and
run, messages that keep their brackets, values converted as Typer converts them, and
database-only commands that import neither JAX nor what only writes need."""

import json
import os
import re

import pytest

import ntklab
from conftest import REPO, ntklab as cli
from ntklab.cli.common import EXIT_CODES

PROBE = """\
name: conventions
groups:
  p: {task: probe, steps: 4, sweep: {grid: {seed: [0, 1]}}}
"""


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """A home whose database holds a finished probe experiment; returns (home, run keys)."""
    home = tmp_path_factory.mktemp("home")
    (home / "conventions.yaml").write_text(PROBE)
    result = cli("run", "conventions.yaml", "--format", "json", home=home, check=True)
    summary = json.loads(result.stdout)
    assert summary["experiment"] == "conventions"
    assert summary["groups"] == [{"group": "p", "task": "probe", "new": 0, "pending": 0, "running": 0,
                                  "interrupted": 0, "done": 2, "failed": 0, "diverged": 0, "total": 2}]
    keys = [r["key"] for r in json.loads(cli("query", "-e", "conventions", "-c", "key", "-f", "json",
                                             home=home, check=True).stdout)]
    return home, keys


def test_version_and_short_help(tmp_path):
    version = cli("--version", home=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"ntklab {ntklab.__version__}"
    for args in (["-h"], ["status", "-h"], ["db", "upgrade", "-h"], ["data", "fetch", "-h"]):
        shown = cli(*args, home=tmp_path)
        assert shown.returncode == 0, shown.stderr
        for code, _ in EXIT_CODES:
            assert re.search(rf"^ +{code}  \w", shown.stdout, re.M), f"exit code {code} missing from {args} help"
    status_help = cli("status", "-h", home=tmp_path).stdout
    assert "NTKLAB_DB" in status_help and "NTKLAB_HOME" in status_help and "--db URL" in status_help
    assert "NTKLAB_DATA" in cli("data", "list", "-h", home=tmp_path).stdout
    assert "--set KEY=VALUE" in cli("run", "-h", home=tmp_path).stdout


def test_readme_lists_the_exit_codes():
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("Exit codes"):]
    for code, _ in EXIT_CODES:
        assert re.search(rf"`{code}`", section), f"README does not list exit code {code}"


def test_environment_variables_reach_the_options(tmp_path):
    missing = cli("status", home=tmp_path, db=f"sqlite:///{tmp_path / 'elsewhere' / 'none.db'}")
    assert missing.returncode == 3 and "elsewhere" in missing.stderr, "NTKLAB_DB names the database"
    bad = cli("status", home=tmp_path, db="mysql://x@y/z")
    assert bad.returncode == 3 and "unsupported database" in bad.stderr and "'mysql'" in bad.stderr


def test_completion_reads_names_and_keys_from_the_database(probed):
    home, keys = probed

    def complete(words: str) -> list[str]:
        env = {"_NTKLAB_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1)}
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            return cli(home=home, check=True).stdout.split()
        finally:
            for k, v in old.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)

    assert complete("ntklab status conv") == ["conventions"]
    assert complete("ntklab query -e c") == ["conventions"]
    assert complete("ntklab status zzz") == []
    assert sorted(complete(f"ntklab show {keys[0][:1]}")) == sorted(k[:12] for k in keys if k[0] == keys[0][0])


def test_experiment_named_by_its_spec_file(probed):
    home, _ = probed
    by_name = cli("status", "conventions", "-f", "json", home=home, check=True).stdout
    by_file = cli("status", "conventions.yaml", "-f", "json", home=home, check=True).stdout
    assert json.loads(by_name) == json.loads(by_file) and json.loads(by_name)[0]["done"] == 2
    queried = cli("query", "-e", "conventions.yaml", "-c", "key", "-f", "json", home=home, check=True).stdout
    assert len(json.loads(queried)) == 2
    missing = cli("status", "nowhere.yaml", home=home)
    assert missing.returncode == 2 and "no spec file 'nowhere.yaml'" in missing.stderr


def test_plan_json_lists_groups_and_runs(probed):
    home, keys = probed
    planned = json.loads(cli("plan", "conventions.yaml", "--show", "-f", "json", home=home, check=True).stdout)
    assert planned["groups"][0]["done"] == 2
    assert sorted(r["key"] for r in planned["runs"]) == sorted(keys)
    assert {r["status"] for r in planned["runs"]} == {"done"} and {r["seed"] for r in planned["runs"]} == {0, 1}


def test_brackets_in_messages_are_printed(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: b\ngroups:\n  g: {task: probe, steps: -1}\n")
    result = cli("run", "bad.yaml", home=tmp_path)
    assert result.returncode == 2
    assert "steps: Input should be greater than 0 (got -1) [group g]" in result.stderr, result.stderr


NOT_IMPORTED = {
    "jax": "JAX", "jaxlib": "JAX", "equinox": "JAX", "optax": "JAX",
    "pydantic": "Typer converts values through it unless ntklab/cli/conversion.py does",
    "sqlalchemy.orm": "ntklab/db/models.py maps it; the read paths use the Core tables",
    "sqlalchemy.dialects.postgresql": "a dialect option declared on a SQLite home's tables loads it (ntklab/db/models.py)",
    "alembic": "the schema check reads alembic_version itself",
    "filelock": "only creating or migrating a schema takes the lock",
    "ntklab.db.queue": "the queue's writes; lost runs come from ntklab/db/liveness.py",
}


def read_only_args(command: str, keys: list[str]) -> list[str]:
    return {"status": ["status"], "query": ["query", "-e", "conventions"], "show": ["show", keys[0][:8]],
            "logs": ["logs", keys[0][:8]], "compare": ["compare", keys[0][:8], keys[1][:8]]}[command]


@pytest.mark.parametrize("command", ["status", "query", "show", "logs", "compare"])
def test_database_only_commands_import_neither_jax_nor_what_only_writes_need(probed, command):
    home, keys = probed
    result = cli(*read_only_args(command, keys), home=home, check=True, python_options=["-X", "importtime"])
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported, "python -X importtime printed nothing"
    loaded = {m: why for m in imported for prefix, why in NOT_IMPORTED.items() if m == prefix or m.startswith(prefix + ".")}
    assert not loaded, f"`ntklab {command}` imports {sorted(loaded)[:5]}: {sorted(set(loaded.values()))}"


@pytest.mark.parametrize("args", [
    ["status", "-f", "json"], ["status", "--format", "xml"], ["status", "-f", "JSON"],
    ["query", "-e", "conventions", "--limit", "1", "-c", "key", "-f", "csv"], ["query", "--limit", "0"],
    ["query", "--limit", "1_0", "-f", "json"], ["query", "--limit", " 2", "-f", "json"], ["query", "--limit", "x1"],
    ["query", "--limit", "99999999999999999999"], ["query", "-g", "p", "-g", "q", "-s", "done", "-f", "csv"],
    ["compare", "--format", "json", "KEY0", "KEY1"], ["logs", "KEY0"],
])
def test_values_are_accepted_and_refused_as_typer_converts_them(probed, args):
    """The CLI converts plain values without pydantic (ntklab/cli/conversion.py); Typer's own
    converters, here in this process where that is not installed, give the same output and exit code."""
    from typer.testing import CliRunner

    from ntklab.cli import app

    home, keys = probed
    args = [keys[int(a[3:])][:8] if a.startswith("KEY") else a for a in args]
    result = cli(*args, home=home)
    reference = CliRunner().invoke(app, args, prog_name="ntklab", env={"NTKLAB_HOME": str(home), "NTKLAB_DB": None})
    assert (result.returncode, result.stdout, result.stderr) == (reference.exit_code, reference.stdout,
                                                                 reference.stderr), args


def test_conventions_on_postgresql(home, pg_url):
    """The database-facing conventions on PostgreSQL: run's and plan's JSON, completion, an
    experiment named by its spec file, and the notebook API reading an artifact by run key."""
    from ntklab.reports.api import load_artifact, load_experiment

    (home / "conventions.yaml").write_text(PROBE.replace("steps: 4", "steps: 4, artifact_bytes: 8"))
    summary = json.loads(cli("run", "conventions.yaml", "-f", "json", home=home, db=pg_url, check=True).stdout)
    assert summary["groups"][0]["done"] == 2 and summary["headlines"][0]["metric"] == "loss"
    planned = json.loads(cli("plan", "conventions.yaml", "--show", "-f", "json", home=home, db=pg_url,
                             check=True).stdout)
    keys = sorted(r["key"] for r in planned["runs"])
    assert {r["status"] for r in planned["runs"]} == {"done"} and len(keys) == 2
    env = {"_NTKLAB_COMPLETE": "complete_bash", "COMP_WORDS": "ntklab status co", "COMP_CWORD": "2"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        assert cli(home=home, db=pg_url, check=True).stdout.split() == ["conventions"]
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    by_file = json.loads(cli("status", "conventions.yaml", "-f", "json", home=home, db=pg_url, check=True).stdout)
    assert by_file[0]["done"] == 2
    exp = load_experiment("conventions", db=pg_url)
    seeds = {p["key"]: p["seed"] for p in exp.params}
    assert sorted(seeds) == keys
    for key, seed in seeds.items():
        assert load_artifact(key[:10], "probe", db=pg_url, home=home) == bytes((seed + i) % 256 for i in range(8))
