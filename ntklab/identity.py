"""Run identity: sha256 of the canonical JSON of the validated, fully defaulted config.

Fields marked non-semantic (`configbase.non_semantic`) are left out, so changing how often a run
checkpoints never makes it a different run; fields added later (`configbase.added_field`) are left
out while they hold their default, so adding an option never changes the keys of recorded runs.
The scheme is versioned: a change to it bumps HASH_VERSION, which changes every key rather than
silently colliding with old ones.
"""

import functools
import hashlib
import json
from typing import Any

from pydantic import BaseModel

from ntklab.configbase import ADDED, NON_SEMANTIC

HASH_VERSION = 1


@functools.cache
def _non_semantic_fields(model_class: type[BaseModel]) -> frozenset[str]:
    fields = model_class.model_fields
    return frozenset(
        name for name, info in fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(NON_SEMANTIC)
    )


@functools.cache
def _added_fields(model_class: type[BaseModel]) -> dict[str, Any]:
    """The fields marked `added_field`, with their defaults."""
    return {
        name: info.get_default(call_default_factory=True) for name, info in model_class.model_fields.items()
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(ADDED)
    }


def _prune(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    skipped = _non_semantic_fields(type(model))
    added = _added_fields(type(model))
    kept = {}
    for name, value in dumped.items():
        if name in skipped:
            continue
        if name in added and getattr(model, name) == added[name]:
            continue
        if isinstance(value, dict):  # only mappings and lists of them can be models: scalars are kept as they are
            attr = getattr(model, name)
            if isinstance(attr, BaseModel):
                value = _prune(attr, value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            attr = getattr(model, name)
            if isinstance(attr[0], BaseModel):
                value = [_prune(a, v) for a, v in zip(attr, value)]
        kept[name] = value
    return kept


def semantic_dict(config: BaseModel, dumped: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config as JSON-ready data (`dumped`, when the caller has it), without non-semantic fields."""
    return _prune(config, dumped if dumped is not None else config.model_dump(mode="json"))


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_key(config: BaseModel, dumped: dict[str, Any] | None = None) -> str:
    """The 64-hex-digit identity of a run; `dumped` is `config.model_dump(mode="json")` if at hand."""
    payload = f"ntklab-run/v{HASH_VERSION}\n{canonical_json(semantic_dict(config, dumped))}"
    return hashlib.sha256(payload.encode()).hexdigest()
