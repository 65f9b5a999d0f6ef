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
from json.encoder import encode_basestring
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


def _kept(model: BaseModel, name: str) -> bool:
    """Whether field `name` of `model` is part of the identity."""
    if name in _non_semantic_fields(type(model)):
        return False
    added = _added_fields(type(model))
    return name not in added or getattr(model, name) != added[name]


def _semantic_value(model: BaseModel, name: str, value: Any) -> Any:
    """Field `name` of `model`, dumped as `value`, without the non-semantic fields inside it."""
    if isinstance(value, (dict, list)):  # only mappings and lists of them can be models: scalars are kept as they are
        return semantic_value(getattr(model, name), value)
    return value


def semantic_value(attr: Any, value: Any) -> Any:
    """A field's value `attr`, dumped as `value`, without the non-semantic fields inside it."""
    if isinstance(value, dict):
        if isinstance(attr, BaseModel):
            return _prune(attr, value)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        if isinstance(attr[0], BaseModel):
            return [_prune(a, v) for a, v in zip(attr, value)]
    return value


def _prune(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    return {name: _semantic_value(model, name, value) for name, value in dumped.items() if _kept(model, name)}


def semantic_dict(config: BaseModel, dumped: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config as JSON-ready data (`dumped`, when the caller has it), without non-semantic fields."""
    return _prune(config, dumped if dumped is not None else config.model_dump(mode="json"))


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_json(data: Any) -> str:
    """json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False),
    with one encoder for all calls (json.dumps builds one a call)."""
    return _ENCODER.encode(data)


def composed_semantic_json(model: BaseModel, dumped: dict[str, Any], parts: dict[str, str]) -> str:
    """`canonical_json(semantic_dict(model, dumped))` given the identity text of some of its fields
    (`parts`, each `canonical_json(semantic_value(attr, value))`), so sub-configs that many runs
    share are encoded once; `dumped` holds fields of the model only (no computed fields).

    Exactly json.dumps's output: with sort_keys and these separators it writes a mapping as its
    items sorted by key, `"key":value`, joined by commas, each value encoded the same way. The
    scalars are written as its C encoder writes them (a call of the encoder costs ~1 us more)."""
    texts = []
    for name, prefix, default in _layout(type(model)):
        if name not in dumped or (default is not _ALWAYS and getattr(model, name) == default):
            continue
        text = parts.get(name)
        texts.append(prefix + (text if text is not None else _encoded(_semantic_value(model, name, dumped[name]))))
    return "{" + ",".join(texts) + "}"


_ALWAYS = object()


@functools.cache
def _layout(model_class: type[BaseModel]) -> tuple[tuple[str, str, Any], ...]:
    """The identity's fields of `model_class` in key order: name, `"name":`, and the default
    (for an added field, which is left out at its default) or _ALWAYS."""
    skipped = _non_semantic_fields(model_class)
    added = _added_fields(model_class)
    return tuple((name, _encoded(name) + ":", added.get(name, _ALWAYS))
                 for name in sorted(model_class.model_fields) if name not in skipped)


def _encoded(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is str:
        return encode_basestring(value)
    return canonical_json(value)


def key_of(text: str) -> str:
    """The run key of a config's identity text, `canonical_json(semantic_dict(config))`."""
    return hashlib.sha256(f"ntklab-run/v{HASH_VERSION}\n{text}".encode()).hexdigest()


def run_key(config: BaseModel, dumped: dict[str, Any] | None = None) -> str:
    """The 64-hex-digit identity of a run; `dumped` is `config.model_dump(mode="json")` if at hand."""
    return key_of(canonical_json(semantic_dict(config, dumped)))
