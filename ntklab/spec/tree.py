"""A run's config as it is assembled from defaults, its group, sweep points and overrides,
remembering where each value was set so validation errors can point at the right line."""

from typing import Any

from ntklab.spec.sweep import split_key
from ntklab.spec.yaml_source import Path

# Keys that select a member of a discriminated union. A mapping that switches one of them
# replaces the mapping below it instead of merging into it: `{arch: cnn, channels: 64}` over
# `{arch: mlp, width: 512}` must not keep `width`.
DISCRIMINATORS = frozenset({"task", "arch", "dataset", "name", "kind"})

Source = Path | str  # a path in the spec file, or the text of a command-line override


class ConfigTree:
    """Copies share the mappings neither has assigned into: `assign` copies each mapping on its
    path before changing it, so a sweep point costs what it changes, not the size of the config."""

    def __init__(self) -> None:
        self.value: dict[str, Any] = {}
        self.sources: dict[tuple[str, ...], Source] = {}

    def copy(self) -> "ConfigTree":
        other = ConfigTree()
        other.value = dict(self.value)
        other.sources = dict(self.sources)
        return other

    def assign(self, key: tuple[str, ...], value: Any, source: Source) -> None:
        """Set `key` to `value`, merging mappings into mappings (dotted keys allowed inside them)."""
        parent = self.value
        for i, part in enumerate(key[:-1]):
            child = parent.get(part)
            if isinstance(child, dict):
                child = parent[part] = dict(child)
            else:
                child = parent[part] = {}
                self.sources[key[: i + 1]] = source  # nothing was set inside a value that is not a mapping
            parent = child
        leaf = key[-1]
        existing = parent.get(leaf)
        if isinstance(value, dict) and isinstance(existing, dict) and not _switches_member(existing, value):
            self.sources.setdefault(key, source)
            for sub_key, sub_value in value.items():
                self.assign(key + split_key(sub_key), sub_value, _child(source, sub_key))
            return
        if isinstance(existing, dict):
            self._forget(key)
        if isinstance(value, dict):
            parent[leaf] = {}
            self.sources[key] = source
            for sub_key, sub_value in value.items():
                self.assign(key + split_key(sub_key), sub_value, _child(source, sub_key))
        else:
            parent[leaf] = _copy_plain(value)
            self.sources[key] = source

    def source_of(self, loc: tuple[str, ...]) -> Source | None:
        """Where the value at `loc` (or its nearest enclosing mapping) was set. Inside a value set
        from the spec file (a list of layers), the path continues into it: the line of a list
        item is that item's (SourcedYaml.line_of falls back to the nearest line it has)."""
        for end in range(len(loc), -1, -1):
            found = self.sources.get(tuple(loc[:end]))
            if found is not None:
                return found + tuple(loc[end:]) if isinstance(found, tuple) else found
        return None

    def _forget(self, key: tuple[str, ...]) -> None:
        """Drop the sources inside the mapping at `key` (only a mapping has any)."""
        n = len(key)
        for known in [k for k in self.sources if k[:n] == key]:
            del self.sources[known]


def _copy_plain(value: Any) -> Any:
    """A deep copy of YAML data (dicts, lists, scalars); much faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_plain(v) for v in value]
    return value


def _switches_member(existing: dict[str, Any], incoming: dict[str, Any]) -> bool:
    return any(k in DISCRIMINATORS and k in existing and existing[k] != v for k, v in incoming.items())


def _child(source: Source, key: Any) -> Source:
    return source if isinstance(source, str) else source + (key,)
