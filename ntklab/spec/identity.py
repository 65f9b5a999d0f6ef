"""Run identity: sha256 of the canonical JSON of the validated, fully defaulted config.

Fields marked non-semantic (`configbase.non_semantic`) are left out, so changing how often a run
checkpoints never makes it a different run. The scheme is versioned: a change to it bumps
HASH_VERSION, which changes every key rather than silently colliding with old ones.
"""

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from ntklab.configbase import NON_SEMANTIC

HASH_VERSION = 1


def _is_non_semantic(model: BaseModel, name: str) -> bool:
    extra = type(model).model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(NON_SEMANTIC))


def _prune(model: BaseModel, dumped: dict[str, Any]) -> dict[str, Any]:
    kept = {}
    for name, value in dumped.items():
        if _is_non_semantic(model, name):
            continue
        attr = getattr(model, name)
        if isinstance(attr, BaseModel):
            value = _prune(attr, value)
        elif isinstance(attr, (list, tuple)):
            value = [_prune(a, v) if isinstance(a, BaseModel) else v for a, v in zip(attr, value)]
        kept[name] = value
    return kept


def semantic_dict(config: BaseModel) -> dict[str, Any]:
    """The config as JSON-ready data, without its non-semantic fields."""
    return _prune(config, config.model_dump(mode="json"))


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def run_key(config: BaseModel) -> str:
    """The 64-hex-digit identity of a run."""
    payload = f"ntklab-run/v{HASH_VERSION}\n{canonical_json(semantic_dict(config))}"
    return hashlib.sha256(payload.encode()).hexdigest()
