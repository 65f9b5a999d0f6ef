"""The persistent compilation cache (ntklab/runner/compilation_cache.py): a process loads the
programs an earlier process compiled, from the home's cache/xla unless NTKLAB_XLA_CACHE says
otherwise, and the commands that execute runs use it."""

import os
import subprocess
import sys

import pytest

from conftest import XLA_CACHE, _cli_env
from ntklab.runner.compilation_cache import ENTRY_SUFFIX, trim

PROBE = """
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

from ntklab.runner.compilation_cache import enable_compilation_cache
from ntklab.store import Home

hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
enable_compilation_cache(Home(Path(sys.argv[1])))
jax.jit(lambda x: jnp.sin(x) * 3.0 + 1.0)(jnp.arange(7.0)).block_until_ready()
print(len(hits))
"""

SPEC = """\
name: cached
groups:
  mlp:
    task: train
    seed: 0
    data: {dataset: synthetic, n_train: 32, n_test: 16, dim: 8, num_classes: 2}
    model: {arch: mlp, depth: 1, width: 16}
    train: {optimizer: {name: sgd, lr: 0.1}, batch_size: 16, epochs: 1}
"""


def _env(home, **settings):
    env = _cli_env(home, None)
    env.pop(XLA_CACHE)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    return env | settings


def _hits(home, **settings) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, str(home)], env=_env(home, **settings), capture_output=True,
                          text=True, check=True)
    return int(done.stdout)


def _entries(directory) -> list:
    return [p for p in directory.rglob("*-cache") if p.is_file()] if directory.exists() else []


def test_a_later_process_loads_what_an_earlier_one_compiled(home):
    assert _hits(home) == 0
    assert _entries(home / "cache" / "xla")
    assert _hits(home) >= 1


def test_the_cache_can_live_elsewhere_or_be_off(home, tmp_path):
    elsewhere = tmp_path / "shared-cache"
    assert _hits(home, **{XLA_CACHE: str(elsewhere)}) == 0
    assert _hits(home, **{XLA_CACHE: str(elsewhere)}) >= 1
    assert _entries(elsewhere) and not (home / "cache").exists()
    assert _hits(home, **{XLA_CACHE: "off"}) == 0
    assert _hits(home, **{XLA_CACHE: "off"}) == 0
    assert not (home / "cache").exists()


@pytest.mark.parametrize("executor", [[], ["--executor", "local", "--workers", "1"]], ids=["inline", "worker"])
def test_commands_that_execute_runs_fill_the_homes_cache(home, executor):
    (home / "spec.yaml").write_text(SPEC)
    done = subprocess.run([sys.executable, "-m", "ntklab", "run", "spec.yaml", *executor], cwd=home, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    directory = home / "cache" / "xla"
    assert _entries(directory)
    # ntklab keeps the size bound itself (trim): JAX's reads every entry at each write, and leaves
    # access-time files and a lock file beside the entries
    assert not list(directory.glob("*-atime")) and not (directory / ".lockfile").exists()


def test_a_cache_over_its_bound_loses_its_least_recently_used_entries(tmp_path):
    sizes = {"old": 300, "used": 300, "new": 300}
    for age, (name, size) in enumerate(sizes.items()):
        path = tmp_path / f"{name}{ENTRY_SUFFIX}"
        path.write_bytes(b"x" * size)
        os.utime(path, (1_000_000 + age, 1_000_000 + age))
    os.utime(tmp_path / f"used{ENTRY_SUFFIX}", (2_000_000, 1_000_000))  # read after "new" was written
    (tmp_path / "other").write_bytes(b"y" * 10_000)  # not an entry: never counted or deleted
    trim(tmp_path, 900)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["other", *(f"{n}{ENTRY_SUFFIX}" for n in sizes)])
    trim(tmp_path, 650)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new-cache", "other", "used-cache"]
    trim(tmp_path, 299)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]

