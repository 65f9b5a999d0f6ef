"""Command-line values converted without pydantic, so a read-only command never imports it.

Typer (0.2x) converts every parameter value through a pydantic TypeAdapter that it builds when the
command runs: importing pydantic and building the adapters cost `ntklab status` as much as its
database work. The values ntklab's commands take are plain: strings, lists of strings, paths, enum
choices, integers. `plain_values` gives each such parameter a converter that returns exactly what
the adapter returns for an ordinary value (the string; `Path(value)` and Typer's own path checks;
Typer's own choice matching; `int` of a short run of digits within the bounds), and hands anything
else, and every value it would refuse, to Typer's own adapter: an error reads as Typer words it.
A Typer without this machinery (before 0.2x it converted through click, not pydantic) is left as
it is.
"""

import re
from enum import Enum
from pathlib import Path
from typing import Any

try:
    from typer._coercion import RuntimeParam, build_runtime_param
    from typer._param_types import coerce_cli_choice, coerce_cli_path, routes_to_path
    from typer.core import _TyperParameter
except ImportError:  # a Typer that converts through click, or has moved these
    RuntimeParam = None

_DIGITS = re.compile(r"[0-9]{1,18}")
_UNCONVERTED = object()


def plain_values() -> None:
    """From now on, give every plain Typer parameter the pydantic-free converter when it first
    converts a value (the help option of each command is made only then, so no earlier pass over
    the commands could reach it)."""
    if (RuntimeParam is None or RuntimeParam.__abstractmethods__ != {"_coerce_value"}
            or _TyperParameter.get_runtime_param.__module__ == __name__):
        return
    typers = _TyperParameter.get_runtime_param

    def get_runtime_param(param):
        if param._runtime_param is None and _is_plain(param.type_descriptor):
            param._runtime_param = _PlainRuntimeParam(parameter_info=param.type_descriptor.parameter_info,
                                                      annotation=param.type_descriptor.annotation)
        return typers(param)

    _TyperParameter.get_runtime_param = get_runtime_param


def _is_plain(descriptor) -> bool:
    info, annotation = descriptor.parameter_info, descriptor.annotation
    if descriptor.file_annotation is not None or info.parser is not None:
        return False
    return (annotation in (str, bool) or annotation == list[str] or (annotation is int and not info.clamp)
            or (isinstance(annotation, type) and issubclass(annotation, Enum))
            or (annotation is Path and info.path_type is None and routes_to_path(annotation, info)))


if RuntimeParam is not None:

    class _PlainRuntimeParam(RuntimeParam):
        def _coerce_value(self, value: Any, param, ctx) -> Any:
            converted = self._plain(value, param, ctx)
            if converted is _UNCONVERTED:
                return build_runtime_param(param.type_descriptor)._coerce_value(value, param=param, ctx=ctx)
            return converted

        def _plain(self, value: Any, param, ctx) -> Any:
            info, annotation = self.parameter_info, self.annotation
            if annotation == list[str]:
                items = value if isinstance(value, (list, tuple)) else [value]
                return list(items) if all(isinstance(v, str) for v in items) else _UNCONVERTED
            if annotation is bool:
                return value if isinstance(value, bool) else _UNCONVERTED
            if not isinstance(value, str):
                return _UNCONVERTED
            if annotation is str:
                return value
            if annotation is int:
                number = int(value) if _DIGITS.fullmatch(value) else None
                if number is None or (info.min is not None and number < info.min) or (
                        info.max is not None and number > info.max):
                    return _UNCONVERTED
                return number
            try:
                if annotation is Path:
                    return coerce_cli_path(Path(value), info, path_type=Path, param=param, ctx=ctx)
                return coerce_cli_choice(value, choices=list(annotation), case_sensitive=info.case_sensitive, ctx=ctx)
            except Exception:  # noqa: BLE001 - refused: Typer's adapter refuses it in its own words
                return _UNCONVERTED
