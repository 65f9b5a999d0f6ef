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
from ntklab.spec.limits import MAX_DEPTH, MAX_VALUES

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


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Builder:
    """Turns a composed YAML node tree into Python values, recording the line of every key path,
    within the MAX_VALUES and MAX_DEPTH limits, with YAML merge keys (`<<: *base`)."""

    def __init__(self, file: str):
        self.file = file
        self.loader = _Loader("")
        self.lines: dict[Path, int] = {}
        self.problems: list[Problem] = []
        self.values = 0

    def build(self, node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
        self.values += 1
        if self.values > MAX_VALUES:
            raise SpecError([Problem(self.file, node.start_mark.line + 1, _dotted(path),
                                     f"the spec expands to more than {MAX_VALUES:,} values "
                                     "(aliases nested in aliases?)")])
        if len(path) > MAX_DEPTH:
            raise SpecError([Problem(self.file, node.start_mark.line + 1, _dotted(path),
                                     f"nested deeper than {MAX_DEPTH} levels")])
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, lines)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, path + (i,), lines) for i, item in enumerate(node.value)]
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: yaml.MappingNode, path: Path, lines: dict[Path, int]) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        merges = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable) or isinstance(key, (list, dict)):
                self.problems.append(Problem(self.file, key_node.start_mark.line + 1, _dotted(path),
                                             "mapping keys must be scalars"))
                continue
            child = path + (key,)
            if key in result:
                self.problems.append(Problem(self.file, key_node.start_mark.line + 1, _dotted(child),
                                             f"duplicate key {key!r} (first given on line {lines.get(child)})"))
                continue
            lines[child] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, child, lines)
        for merge in merges:
            self._merge(merge, path, lines, result)
        return result

    def _merge(self, node: yaml.Node, path: Path, lines: dict[Path, int], result: dict[Any, Any]) -> None:
        """`<<: *base` or `<<: [*a, *b]`: the keys of the merged mappings that the mapping does not
        set itself (the first merged mapping wins over later ones), with the lines they were written on."""
        for source in node.value if isinstance(node, yaml.SequenceNode) else [node]:
            if not isinstance(source, yaml.MappingNode):
                self.problems.append(Problem(self.file, source.start_mark.line + 1, _dotted(path),
                                             "a merge key (<<) takes a mapping or a list of mappings"))
                continue
            merged_lines: dict[Path, int] = {}
            for key, value in self._mapping(source, path, merged_lines).items():
                if key not in result:
                    result[key] = value
                    for where, line in merged_lines.items():
                        if where[:len(path) + 1] == path + (key,):
                            lines.setdefault(where, line)


def _dotted(path: Path) -> str:
    return ".".join(str(p) for p in path)


def parse_yaml(text: str, file: str) -> SourcedYaml:
    """Parse one YAML document; raise SpecError naming the line of a syntax error, a duplicate key
    or a limit exceeded."""
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as err:  # a character YAML does not allow, found before parsing
        line = text[:err.position].count("\n") + 1
        raise SpecError([Problem(file, line, "", f"invalid YAML: character {err.character:#06x} is not allowed")]) from None
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as err:
        raise SpecError([_yaml_problem(err, file)]) from None
    except RecursionError:
        raise SpecError([Problem(file, None, "", f"nested deeper than {MAX_DEPTH} levels")]) from None
    finally:
        loader.dispose()
    if node is None:
        return SourcedYaml(None, file)
    builder = _Builder(file)
    try:
        value = builder.build(node, (), builder.lines)
    except yaml.YAMLError as err:
        raise SpecError([_yaml_problem(err, file)]) from None
    if builder.problems:
        raise SpecError(builder.problems)
    return SourcedYaml(value, file, builder.lines)


def _yaml_problem(err: yaml.YAMLError, file: str) -> Problem:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err)
    return Problem(file, mark.line + 1 if mark is not None else None, "", f"invalid YAML: {problem}")


def parse_scalar(text: str, where: str = "--set") -> Any:
    """Parse a command-line value (`--set key=value`) with the same YAML 1.2 rules and limits as a
    spec; a value that is not YAML is a SpecError naming `where`."""
    return parse_yaml(text, where).value if text.strip() else ""
