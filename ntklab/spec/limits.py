"""The limits a spec is held to before anything is expanded, so a typo or a hostile file is refused
in a second with its line instead of taking minutes and gigabytes."""

MAX_SPEC_BYTES = 1 << 20
"""The largest spec file read."""
MAX_VALUES = 200_000
"""The most values (mappings, lists and scalars, each alias counted as often as it is expanded) a
spec may hold: nested aliases (`b: [*a, *a]`, `c: [*b, *b]`, ...) double at every level, and a
few lines would otherwise take minutes and gigabytes to expand."""
MAX_DEPTH = 100
"""The deepest nesting of mappings and lists a spec may have."""
MAX_RUNS = 100_000
"""The default most runs a spec may expand to (`--max-runs` raises it), counted before expanding."""
INTEGER_RANGE = (-(2**63), 2**63 - 1)
"""The integers a spec may hold anywhere: what the database, JSON and the engine's int64 take."""
