"""The persistent compilation cache: the XLA programs any worker of a home compiled, loaded from
disk by every later worker process instead of compiled again.

JAX keeps compiled programs in memory, per process, so each process that executes runs (every
`ntklab run`, each local worker, each Slurm job of an array) would compile the same programs
again. Drawing the initial parameters of LeNet-5 compiles 25 small programs (threefry for each
layer's shape): 7.8 s on one core, 0.5 s when they come from this cache; the kernel of
bench/kernel_blocks.py pays that, its features' and its blocks' compilation in every worker that
helps with it. Entries are keyed by JAX on the program, the jax and jaxlib versions, the backend
and the compile options, so an entry of another version is never used, and a damaged one is
compiled again (JAX warns).

The size bound is kept here, once per process, not by JAX: with `jax_compilation_cache_max_size`
set, JAX lists and reads every entry of the directory at each write to find the least recently
used, so compiling got slower as the cache filled (ghorbani_spiked_small.yaml 34 s -> 43 s with
10,000 entries, 125 ms a write; a week of sweeps leaves tens of thousands). Unbounded, JAX writes
an entry in one call and takes no lock: of two workers writing one program at once, the entry
read back is one worker's whole compressed stream, or a truncated one that fails to decompress
and is compiled again.

The cache is trusted code: keep it where only you can write (the home's `cache/xla`, or
NTKLAB_XLA_CACHE: a directory, or `off`; a JAX_COMPILATION_CACHE_DIR set by the user wins).
"""

import os
from pathlib import Path

from ntklab.store import Home

VARIABLE = "NTKLAB_XLA_CACHE"
MAX_BYTES = 4 << 30
ENTRY_SUFFIX = "-cache"  # how JAX names an entry's file


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
    if jax.config.jax_compilation_cache_max_size == -1:  # else JAX bounds it, as the user asked
        trim(Path(jax.config.jax_compilation_cache_dir), MAX_BYTES)


def trim(directory: Path, max_bytes: int) -> None:
    """Delete the least recently used entries of `directory` until it holds at most `max_bytes`.

    Recency is the file system's access time (relatime: that of the first read after each write,
    then at most one update a day), so this is LRU to within a day. An entry deleted while another
    process reads it is compiled again there."""
    entries = []
    for path in directory.glob(f"*{ENTRY_SUFFIX}"):
        try:
            status = path.stat()
        except FileNotFoundError:  # trimmed by another process meanwhile
            continue
        entries.append((max(status.st_atime, status.st_mtime), status.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
