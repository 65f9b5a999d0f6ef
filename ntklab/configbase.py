"""The pydantic base every config model derives from, and the marker for keys outside run identity."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NON_SEMANTIC = "non_semantic"


class StrictModel(BaseModel):
    """Frozen, and unknown keys are errors: a typo in a spec must fail when it is loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def non_semantic(default: Any, description: str) -> Any:
    """A field that cannot change a run's result (how often to checkpoint, how to display progress).

    Such fields are left out of the run's identity hash, so changing them never re-runs anything.
    """
    return Field(default, description=description, json_schema_extra={NON_SEMANTIC: True})
