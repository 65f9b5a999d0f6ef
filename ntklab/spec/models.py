"""The shape of a spec file. Run configs inside groups are validated per expanded run."""

from typing import Any, Literal

from pydantic import Field

from ntklab.configbase import StrictModel

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"


class Figure(StrictModel):
    """A figure is a query over the experiment's runs; a later stage renders it.

    x, series and facet name a config field (dotted), `group`, `seed` or `step`;
    y names one or more metrics.
    """

    title: str = ""
    kind: Literal["line", "scatter", "bar", "heatmap", "table"] = "line"
    x: str
    y: str | list[str]
    series: str | None = None
    facet: str | None = None
    where: str | None = Field(None, description="a filter expression over params and metrics")
    step: Literal["last", "best", "min", "max", "all"] = "last"
    aggregate: Literal["mean_std", "mean_minmax", "none"] = "mean_std"
    log_x: bool | None = None
    log_y: bool | None = None


class SpecFile(StrictModel):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    defaults: dict[str, Any] = Field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = Field(min_length=1)
    sweep: dict[str, Any] | None = None
    figures: dict[str, Figure] = Field(default_factory=dict)
