"""The engine: pure JAX/Equinox functions of configs and arrays. No database, no YAML, no printing."""
