"""The pydantic base every config model derives from, the marker for keys outside run identity, and
the seed type."""

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

NON_SEMANTIC = "non_semantic"


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
