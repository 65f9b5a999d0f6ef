"""The persistent compilation cache: the XLA programs any worker of a home compiled, loaded from
disk by every later worker process instead of compiled again.

JAX keeps compiled programs in memory, per process, so each process that executes runs (every
`ntklab run`, each local worker, each Slurm job of an array) would compile the same programs
again. Drawing the initial parameters of LeNet-5 compiles 25 small programs (threefry for each
layer's shape): 7.8 s on one core, 0.5 s when they come from this cache; the kernel of
bench/kernel_blocks.py pays that, its features' and its blocks' compilation in every worker that
helps with it. Entries are keyed by JAX on the program, the jax and jaxlib versions, the backend
and the compile options, so an entry of another version is never used, and a damaged one is
compiled again (JAX warns). With a size bound JAX locks the directory while it writes (a file
lock), so workers share it safely, and evicts the least recently used entries.

The cache is trusted code: keep it where only you can write (the home's `cache/xla`, or
NTKLAB_XLA_CACHE: a directory, or `off`; a JAX_COMPILATION_CACHE_DIR set by the user wins).
"""

import os
from pathlib import Path

from ntklab.store import Home

VARIABLE = "NTKLAB_XLA_CACHE"
MAX_BYTES = 4 << 30


def cache_directory(home: Home) -> Path | None:
    """Where this process keeps compiled programs; None when NTKLAB_XLA_CACHE is `off`."""
    setting = os.environ.get(VARIABLE, "")
    if setting.lower() == "off":
        return None
    return Path(setting) if setting else home.cache_dir("xla")


def enable_compilation_cache(home: Home) -> None:
    """Use the persistent cache in this process; call it before JAX compiles anything (JAX decides
    at its first compilation whether a cache is used)."""
    import jax

    directory = cache_directory(home)
    if directory is None:
        return
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(directory))
    # Every program, however small or quick to compile: reading an entry takes about a millisecond.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    if jax.config.jax_compilation_cache_max_size == -1:
        jax.config.update("jax_compilation_cache_max_size", MAX_BYTES)
