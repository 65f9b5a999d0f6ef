"""Flattening of nested configs to dotted keys, as stored in the params table and used in queries."""

from typing import Any


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": 0.1}}` -> `{"train.lr": 0.1}`. Lists stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat
