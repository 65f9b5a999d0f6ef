"""Where a result came from: code version, packages, interpreter, devices, host."""

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGES = ("ntklab", "jax", "jaxlib", "equinox", "optax", "numpy", "scipy", "pydantic", "sqlalchemy")


def _git(directory: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


@functools.cache
def git_state(directory: Path) -> dict[str, Any] | None:
    """The commit and dirty flag of the repository containing `directory`, if any."""
    commit = _git(directory, "rev-parse", "HEAD")
    if commit is None:
        return None
    status = _git(directory, "status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


@functools.cache
def _static() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "packages": versions,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "ntklab_git": git_state(Path(__file__).resolve().parent),
    }


def _jax_devices() -> dict[str, Any] | None:
    """Backend and devices, only if the task already imported JAX (never imported here for that)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return None
    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "x64": bool(jax.config.read("jax_enable_x64"))}


def collect(spec_file: str) -> dict[str, Any]:
    return {**_static(), "project_git": git_state(Path(spec_file).resolve().parent), "jax": _jax_devices(),
            "xla_flags": os.environ.get("XLA_FLAGS")}
