"""Runs recorded by an earlier version keep their keys, and their stored configs validate again:
upgrading ntklab never re-runs finished work, and a worker can rebuild any recorded run.

tests/reference/recorded_runs.json holds the configs and keys of runs planned from the shipped
specs by version 0.1.0 (commit 1229eb6), up to four per group. It is a record of the past, not a
fixture to regenerate: a field added to a run config since then must be an
`configbase.added_field` whose default does what those runs did; a change of meaning bumps
identity.HASH_VERSION instead (and then this record is replaced, with that reason in the commit).
"""

import json
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from ntklab.configbase import ADDED, NON_SEMANTIC, StrictModel, added_field
from ntklab.identity import run_key, semantic_dict
from ntklab.tasks.registry import RUN_CONFIG, RunConfig

RECORDED = json.loads((Path(__file__).parent / "reference" / "recorded_runs.json").read_text())["runs"]


@pytest.mark.parametrize("record", RECORDED, ids=[f"{r['spec']}:{r['group']}:{r['key'][:8]}" for r in RECORDED])
def test_recorded_run_keeps_its_key(record):
    config = RUN_CONFIG.validate_python(record["config"])
    assert run_key(config) == record["key"], "a config field changed meaning or was added without added_field"


class _Before(StrictModel):
    lr: float


class _After(StrictModel):
    lr: float
    warmup: int = added_field(0, "steps of warm-up (0: none, as before the field existed)")


def test_added_field_is_in_the_identity_only_away_from_its_default():
    assert run_key(_After(lr=0.1)) == run_key(_Before(lr=0.1))
    assert semantic_dict(_After(lr=0.1, warmup=5)) == {"lr": 0.1, "warmup": 5}
    assert run_key(_After(lr=0.1, warmup=5)) != run_key(_Before(lr=0.1))


def config_classes(annotation, found: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Every config model reachable from a type annotation, by class name."""
    for argument in typing.get_args(annotation):
        config_classes(argument, found)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation.__name__ not in found:
        found[annotation.__name__] = annotation
        for info in annotation.model_fields.values():
            config_classes(info.annotation, found)
    return found


def test_fields_added_since_0_1_0_are_added_fields():
    """tests/reference/config_fields_0.1.0.json: the semantic fields of each config model of 0.1.0."""
    recorded = json.loads((Path(__file__).parent / "reference" / "config_fields_0.1.0.json").read_text())["fields"]
    unmarked = []
    for name, model in config_classes(RunConfig, {}).items():
        for field, info in model.model_fields.items():
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            if name in recorded and field not in recorded[name] and not (extra.get(ADDED) or extra.get(NON_SEMANTIC)):
                unmarked.append(f"{name}.{field}")
    assert not unmarked, f"new fields that change the keys of recorded runs (declare them with added_field): {unmarked}"
