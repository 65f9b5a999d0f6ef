"""Runs recorded by an earlier version keep their keys, and their stored configs validate again:
upgrading ntklab never re-runs finished work, and a worker can rebuild any recorded run.

tests/reference/recorded_runs.json holds the configs and keys of runs planned from the shipped
specs by version 0.1.0 (commit 1229eb6), up to four per group. It is a record of the past, not a
fixture to regenerate: a field added to a run config since then must be an
`configbase.added_field` whose default does what those runs did; a change of meaning bumps
identity.HASH_VERSION instead (and then this record is replaced, with that reason in the commit).
"""

import json
from pathlib import Path

import pytest

from ntklab.configbase import StrictModel, added_field
from ntklab.identity import run_key, semantic_dict
from ntklab.tasks.registry import RUN_CONFIG

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
