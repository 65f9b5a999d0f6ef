"""XLA flags that ntklab's command line sets for its own process, before JAX starts.

jaxlib 0.10.2 hands convolutions and the elementwise work around them, on CPU, to YNNPACK (YNN
fusions). On this project's x86 machines that path is 1.5-3x slower than XLA's own code for
convolutions and page-faults on every call: a 3x3 convolution of 64 x 28 x 28 x 128 inputs takes
207 ms instead of 72 ms, the gradient of Bai et al.'s CNN (batch 64) 1.88 s instead of 0.74 s, and
its linearization 1.62 s instead of 0.66 s (bench/taylor.py); dense networks run at the same
speed either way. `default_xla_flags` turns YNN fusions off, unless XLA_FLAGS already says
anything about them (the user's choice wins).

XLA aborts the process on a flag it does not know, so the flag is added only for the jaxlib
versions it was checked with; other versions run with XLA's defaults. The flags a run used are
part of its provenance.
"""

import importlib.metadata
from collections.abc import MutableMapping

YNN_FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
WITHOUT_YNN_FUSIONS = f"{YNN_FUSION_FLAG}="
JAXLIB_WITH_YNN_FUSIONS = frozenset({"0.10.2"})


def _jaxlib_version() -> str | None:
    try:
        return importlib.metadata.version("jaxlib")
    except importlib.metadata.PackageNotFoundError:
        return None


def default_xla_flags(environ: MutableMapping[str, str], jaxlib_version: str | None = None) -> None:
    """Add ntklab's default XLA flags to `environ["XLA_FLAGS"]` (call before JAX is imported)."""
    version = jaxlib_version if jaxlib_version is not None else _jaxlib_version()
    if version not in JAXLIB_WITH_YNN_FUSIONS:
        return
    flags = environ.get("XLA_FLAGS", "")
    if YNN_FUSION_FLAG in flags:
        return
    environ["XLA_FLAGS"] = f"{flags} {WITHOUT_YNN_FUSIONS}".strip()
