"""Validate a sweep's run configs, each distinct block once, and compute their keys.

In a sweep most blocks of a run's config repeat: a seed x lr x width grid over 100,000 runs has
one `data` block, ten `train` blocks and ten `model` blocks. Assembling each run's config tree,
validating it whole, dumping it to JSON and encoding its identity costs ~200 us a run, most of it
on those repeated blocks (bench/runner.py: 22 s for 100,000 runs). Here a top-level field of the
run config is assembled once per distinct combination of the sweep assignments that set it, and
a field whose type is a model (or a union of models) is validated once per distinct mapping; the
run's config is validated with that instance in its place: pydantic takes an instance of the
field's own model as it is, and still runs the run config's own field checks and model
validators (the cross-field checks). The field's JSON dump and identity text are kept with the
instance, and the run's key is composed from them (identity.composed_semantic_json). Sharing the
validated blocks also shares their dumps, which is most of a large plan's memory.

Exactness: each assignment sets one top-level field (ConfigTree.assign changes nothing outside
`key[0]`), so a field's value is a function of the group's base tree and the assignments to it.
A field is validated apart only where validating its instance is validating its mapping: the run
config has no `before`/`wrap` model validator (it would see an instance instead of a mapping), no
validator, serializer or alias on that field, no model serializer, computed or excluded field. Whenever
anything fails, `validate` returns None and the caller validates the whole tree as it always did,
so errors read as before. tests/test_spec_validation.py compares plans made both ways. The
rejected alternative, a plan entry that keeps only the key and the JSON and validates on demand,
still validates every run once for its key (defaults and added fields enter the identity).
"""
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from ntklab.identity import canonical_json, composed_semantic_json, key_of, run_key, semantic_value
from ntklab.spec.sweep import Assignment
from ntklab.spec.tree import ConfigTree


class Validated(NamedTuple):
    config: BaseModel
    dumped: dict[str, Any]  # config.model_dump(mode="json")
    key: str


def validate_whole(run_config: TypeAdapter, value: dict[str, Any]) -> Validated:
    """The run config of the tree `value`, its dump and its key, computed the straightforward way."""
    config = run_config.validate_python(value)
    dumped = config.model_dump(mode="json")
    return Validated(config, dumped, run_key(config, dumped))


class _Part(NamedTuple):
    """A field validated apart: its instance, its JSON dump and its identity text."""

    instance: BaseModel
    dumped: Any
    text: str


class _Raw(NamedTuple):
    """A field's value, validated with the whole config (`_ABSENT`: the field is not set)."""

    value: Any


_ABSENT = object()
_INVALID = None  # a field that fails validation apart: the whole config's validation reports it
_UNSEEN = object()


class Blocks:
    """The validated blocks of every group's runs, by content: (task, field, repr of the mapping).

    repr is a key by content: YAML data (mappings, lists, str, int, float, bool, None, dates,
    bytes) reads back from its repr, type and all (1, 1.0, True and -0.0 differ)."""

    def __init__(self, run_config: TypeAdapter, config_class: Callable[[str], type[BaseModel] | None]) -> None:
        self.run_config = run_config
        self._config_class = config_class
        self._fields: dict[str, tuple[tuple[str, ...], dict[str, TypeAdapter]]] = {}
        self._parts: dict[tuple, _Part | None] = {}  # None: invalid

    def fields(self, task: Any) -> tuple[tuple[str, ...], dict[str, TypeAdapter]] | None:
        """The field names of `task`'s config and those validated apart; None for an unknown task."""
        if not isinstance(task, str):
            return None
        if task not in self._fields:
            model = self._config_class(task)
            self._fields[task] = (tuple(model.model_fields), _memoizable(model)) if model is not None else None
        return self._fields[task]

    def part(self, task: str, name: str, adapter: TypeAdapter, value: Any) -> _Part | _Raw | None:
        if not isinstance(value, dict):
            return _Raw(value)
        key = (task, name, repr(value))
        found = self._parts.get(key, _UNSEEN)
        if found is _UNSEEN:
            found = self._parts[key] = _part(adapter, value)
        return found


class GroupValidator:
    """Validates the runs of one group: its base tree (defaults and the group's keys) with each
    sweep point's assignments applied."""

    def __init__(self, blocks: Blocks, base: ConfigTree) -> None:
        self._blocks = blocks
        self._base = base
        self._task = base.value.get("task")
        fields = blocks.fields(self._task)
        self._names, self._adapters = fields if fields is not None else ((), {})
        self._values: dict[tuple, _Part | _Raw | None] = {}
        # the base's top level with its blocks validated, their dumps and identity texts
        self._top: dict[str, Any] | None = None
        self._dumps: dict[str, Any] = {}
        self._texts: dict[str, str] = {}
        if fields is not None:
            top = dict(base.value)
            if all(self._settle(self._field(name, ()), name, top, self._dumps, self._texts) for name in self._adapters):
                self._top = top

    def validate(self, assignments: Sequence[Assignment]) -> Validated | None:
        """The run of the base tree with `assignments` applied in order, or None where it must be
        validated as a whole (it is invalid, or sets `task`)."""
        if self._top is None:
            return None
        touching: dict[str, tuple[Assignment, ...]] = {}
        for a in assignments:
            name = a.key[0]
            touching[name] = touching[name] + (a,) if name in touching else (a,)
        top = self._top.copy()
        dumps = self._dumps.copy()
        texts = self._texts.copy()
        values = self._values
        for name, own in touching.items():
            key = (name, *own)
            found = values.get(key, _UNSEEN)
            if found is _UNSEEN:
                found = values[key] = self._field(name, own)
            if not self._settle(found, name, top, dumps, texts):
                return None
        try:
            config = self._blocks.run_config.validate_python(top)
        except ValidationError:
            return None
        if not texts:
            dumped = config.model_dump(mode="json")
            return Validated(config, dumped, run_key(config, dumped))
        dumped = dict.fromkeys(self._names)  # the fields in their order (the model dumps every field)
        dumped.update(config.model_dump(mode="json", exclude=set(texts)))
        dumped.update(dumps)
        return Validated(config, dumped, key_of(composed_semantic_json(config, dumped, texts)))

    @staticmethod
    def _settle(found: _Part | _Raw | None, name: str, top: dict[str, Any], dumps: dict[str, Any],
                texts: dict[str, str]) -> bool:
        """Put field `name`'s value into `top` (a block validated apart: its instance, with its dump
        and identity text); False where it failed validation apart."""
        if found is _INVALID:
            return False
        if type(found) is _Part:
            top[name] = found.instance
            dumps[name] = found.dumped
            texts[name] = found.text
            return True
        dumps.pop(name, None)
        texts.pop(name, None)
        if found.value is _ABSENT:
            top.pop(name, None)
        else:
            top[name] = found.value
        return True

    def _field(self, name: str, own: tuple[Assignment, ...]) -> _Part | _Raw | None:
        """Field `name` of the base tree with `own` applied (ConfigTree.assign, as for the whole tree)."""
        if name == "task":  # a sweep of tasks: the fields validated apart depend on the task
            return _INVALID
        tree = self._base.copy()
        for a in own:
            tree.assign(a.key, a.value, a.source)
        value = tree.value.get(name, _ABSENT)
        adapter = self._adapters.get(name)
        if adapter is None or value is _ABSENT:
            return _Raw(value)
        return self._blocks.part(self._task, name, adapter, value)


class WholeValidation:
    """A task registry that validates every run config whole, no block apart: planning the
    straightforward way, which bench/runner.py times this module against."""

    def __init__(self, tasks: Any) -> None:
        self._tasks = tasks
        self.RUN_CONFIG = tasks.RUN_CONFIG

    def config_class(self, task: str) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tasks, name)


def _part(adapter: TypeAdapter, mapping: dict[str, Any]) -> _Part | None:
    try:
        instance = adapter.validate_python(mapping)
    except ValidationError:
        return _INVALID
    dumped = adapter.dump_python(instance, mode="json")
    return _Part(instance, dumped, canonical_json(semantic_value(instance, dumped)))


def _memoizable(model: type[BaseModel]) -> dict[str, TypeAdapter]:
    """The fields of `model` that validate the same from an instance of their own model as from the
    mapping it was validated from, each with a validator and serializer of its type."""
    decorators = model.__pydantic_decorators__
    if (any(d.info.mode in ("before", "wrap") for d in decorators.model_validators.values())
            or decorators.model_serializers or decorators.root_validators or model.model_computed_fields
            or model.model_config.get("alias_generator") is not None
            or model.model_config.get("revalidate_instances", "never") != "never"
            or any(info.exclude or getattr(info, "exclude_if", None) for info in model.model_fields.values())):
        return {}
    handled = {f for group in (decorators.field_validators, decorators.field_serializers, decorators.validators)
               for d in group.values() for f in d.info.fields}
    if "*" in handled:
        return {}
    found = {}
    for name, info in model.model_fields.items():
        if (name in handled or info.metadata or info.alias or info.validation_alias
                or info.serialization_alias or not _models_only(info.annotation)):
            continue
        annotation = info.annotation
        if info.discriminator is not None:
            annotation = Annotated[annotation, Field(discriminator=info.discriminator)]
        found[name] = TypeAdapter(annotation)
    return found


def _models_only(annotation: Any) -> bool:
    """Whether every value of `annotation` validated from a mapping is a model instance (or None)
    that validates as itself."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _models_only(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return all(_models_only(arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return True
    return (isinstance(annotation, type) and issubclass(annotation, BaseModel)
            and annotation.model_config.get("revalidate_instances", "never") == "never")
