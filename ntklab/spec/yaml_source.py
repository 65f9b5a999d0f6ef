"""YAML loading that remembers where every value came from.

PyYAML alone loses line numbers, silently keeps the last of two duplicate keys, and follows
YAML 1.1, where `1e-3` is a string. This loader fixes all three: values come with a map from
their key path to their line, duplicate keys are errors, and YAML 1.2 floats are floats.
"""

import re
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ntklab.errors import Problem, SpecError

Path = tuple[Hashable, ...]

_FLOAT_1_2 = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 floats (`1e-3` is a float, as in every other YAML 1.2 reader)."""


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _first in "-+0123456789.":
    _Loader.yaml_implicit_resolvers[_first] = [
        (tag, rx) for tag, rx in _Loader.yaml_implicit_resolvers.get(_first, []) if tag != "tag:yaml.org,2002:float"
    ]
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


@dataclass
class SourcedYaml:
    """A parsed YAML document and the 1-based line of every key path in it."""

    value: Any
    file: str
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int | None:
        """The line of `path`, or of its longest prefix that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:end]))
            if line is not None:
                return line
        return None


def _construct(node: yaml.Node, loader: _Loader, path: Path, lines: dict[Path, int], problems: list[Problem], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, (list, dict)):
                problems.append(Problem(file, key_node.start_mark.line + 1, _dotted(path), "mapping keys must be scalars"))
                continue
            child = path + (key,)
            if key in result:
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, _dotted(child),
                            f"duplicate key {key!r} (first given on line {lines.get(child)})")
                )
                continue
            lines[child] = key_node.start_mark.line + 1
            result[key] = _construct(value_node, loader, child, lines, problems, file)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, loader, path + (i,), lines, problems, file) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def parse_yaml(text: str, file: str) -> SourcedYaml:
    """Parse one YAML document; raise SpecError naming the line of a syntax error or duplicate key."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err)
        raise SpecError([Problem(file, line, "", f"invalid YAML: {problem}")]) from None
    finally:
        loader.dispose()
    if node is None:
        return SourcedYaml(None, file)
    lines: dict[Path, int] = {}
    problems: list[Problem] = []
    try:
        value = _construct(node, _Loader(""), (), lines, problems, file)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError([Problem(file, mark.line + 1 if mark else None, "", f"invalid YAML: {err}")]) from None
    if problems:
        raise SpecError(problems)
    return SourcedYaml(value, file, lines)


def parse_scalar(text: str) -> Any:
    """Parse a command-line value (`--set key=value`) with the same YAML 1.2 rules as a spec."""
    return yaml.load(text, Loader=_Loader) if text.strip() else ""
