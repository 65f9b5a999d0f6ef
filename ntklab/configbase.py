"""The pydantic base every config model derives from, the markers for keys outside run identity,
and the seed type."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

NON_SEMANTIC = "non_semantic"
ADDED = "added"


class StrictModel(BaseModel):
    """Frozen, unknown keys are errors and floats are finite: a typo or an `.inf` in a spec must fail
    when it is loaded, not when the run starts."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


SEED_LIMIT = 2**32
Seed = Annotated[int, Field(ge=0, lt=SEED_LIMIT)]
"""A seed: JAX keys keep only the low 32 bits of a seed without x64 (seeds 5 and 2**32 + 5 would
draw the same network) and numpy generators take no negative seed."""


def non_semantic(default: Any, description: str) -> Any:
    """A field that cannot change a run's result (how often to checkpoint, how to display progress).

    Such fields are left out of the run's identity hash, so changing them never re-runs anything.
    """
    return Field(default, description=description, json_schema_extra={NON_SEMANTIC: True})


def added_field(default: Any, description: str, **constraints: Any) -> Any:
    """A field added after runs were recorded without it, whose default does what those runs did.

    While it holds its default it is left out of the run's identity hash, so every run recorded
    before the field existed keeps its key (and is not run again); any other value is part of the
    identity. Every field added to a run config after version 0.1.0 is declared this way
    (tests/test_identity_stable.py checks the keys of runs recorded then).
    """
    return Field(default, description=description, json_schema_extra={ADDED: True}, **constraints)
