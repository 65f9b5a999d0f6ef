"""Load a spec file: parse, validate, expand sweeps, validate every run, compute identities.

Nothing here touches the database or imports a task: the caller passes the task registry
(`ntklab.tasks.registry`), so the spec layer stays below the tasks. Every problem is reported
with the file, the line, the dotted field path and what was expected, and all problems are
gathered before raising.
"""

import contextlib
import dataclasses
import gc
import hashlib
import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError

from ntklab.errors import Problem, SpecError
from ntklab.identity import run_key
from ntklab.spec.executor import ExecutorConfig
from ntklab.spec.limits import INTEGER_RANGE, MAX_RUNS, MAX_SPEC_BYTES
from ntklab.spec.models import NAME_PATTERN, Figure, SpecFile
from ntklab.spec.sweep import Assignment, Point, expand_sweep, mapping_assignments, split_key, sweep_size
from ntklab.spec.tree import DISCRIMINATORS, ConfigTree, Source
from ntklab.spec.validation import Blocks, GroupValidator, Validated, validate_whole
from ntklab.spec.yaml_source import SourcedYaml, parse_scalar, parse_yaml

MAX_PROBLEMS = 25
FIGURE_AXES = ("x", "series", "facet")
FIGURE_BUILTINS = frozenset({"step", "group", "seed"})


class TaskRegistry(Protocol):
    """What loading needs to know of the tasks; the module `ntklab.tasks.registry` is one."""

    RUN_CONFIG: TypeAdapter

    def config_class(self, task: str) -> type[BaseModel] | None: ...

    def task_fields(self, task: str) -> frozenset[str] | None: ...

    def upstream_configs(self, config: BaseModel) -> dict[str, BaseModel]: ...

    def input_problems(self, config: BaseModel) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class PlannedRun:
    key: str
    group: str
    task: str
    config: BaseModel
    config_json: dict[str, Any]
    upstream: tuple[tuple[str, str], ...] = ()  # (name, run key) of the runs this one needs first


@dataclass(frozen=True)
class ExperimentPlan:
    name: str
    description: str
    file: str
    text: str
    spec_hash: str
    runs: list[PlannedRun]
    figures: dict[str, Figure]
    duplicates: int
    executor: ExecutorConfig | None = None


@dataclass(frozen=True)
class Override:
    key: tuple[str, ...]
    value: Any
    text: str


def parse_override(text: str) -> Override:
    """`train.epochs=5` -> Override(("train", "epochs"), 5)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise SpecError([Problem("--set", None, "", f"expected KEY=VALUE with a dotted KEY, got {text!r}")])
    return Override(split_key(key), parse_scalar(value, f"--set {text}"), text)


def load_spec(path: str | FilePath, overrides: Sequence[str] = (), *, tasks: TaskRegistry,
              max_runs: int = MAX_RUNS) -> ExperimentPlan:
    """The runs of the spec at `path` with `overrides` (`KEY=VALUE`) applied; a spec that expands
    to more than `max_runs` runs is refused before it is expanded."""
    file = str(path)
    try:
        size = FilePath(path).stat().st_size
        if size > MAX_SPEC_BYTES:
            raise SpecError([Problem(file, None, "", f"the spec is {size:,} bytes; at most {MAX_SPEC_BYTES:,} are read")])
        text = FilePath(path).read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError([Problem(file, None, "", f"cannot read the spec: {err.strerror or err}")]) from None
    except UnicodeDecodeError as err:
        line = err.object[:err.start].count(b"\n") + 1
        raise SpecError([Problem(file, line, "", f"not UTF-8 text (byte {err.object[err.start]:#04x} at offset "
                                 f"{err.start})")]) from None
    doc = parse_yaml(text, file)
    if not isinstance(doc.value, dict):
        raise SpecError([Problem(file, doc.line_of(()), "", "a spec must be a mapping with name, groups, ...")])
    try:
        spec = SpecFile.model_validate(doc.value)
    except ValidationError as err:
        raise SpecError(_problems_at(err, doc, ())) from None
    parsed_overrides = [parse_override(o) for o in overrides]
    _check_integers(doc, parsed_overrides)
    _check_size(spec, doc, max_runs)
    with _no_cyclic_collection():
        runs, duplicates = _expand(spec, doc, parsed_overrides, tasks)
    _check_figures(spec, doc, runs)
    return ExperimentPlan(
        name=spec.name,
        description=spec.description,
        file=file,
        text=text,
        spec_hash=hashlib.sha256(text.encode()).hexdigest(),
        runs=runs,
        figures=dict(spec.figures),
        duplicates=duplicates,
        executor=spec.executor,
    )


@contextlib.contextmanager
def _no_cyclic_collection():
    """Expanding a sweep allocates objects that are all kept (the plan): the cyclic garbage
    collector would traverse them again and again and find nothing, ~13% of planning 100,000 runs."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def select_groups(plan: ExperimentPlan, groups: Sequence[str]) -> ExperimentPlan:
    """The plan restricted to the runs of `groups` and the upstream runs they need (whatever group
    they were planned in). Upstream groups (`<group>.<name>`) can be chosen too. An unknown group
    name is a SpecError that lists the plan's groups."""
    if not groups:
        return plan
    known = list(dict.fromkeys(r.group for r in plan.runs))
    unknown = [g for g in groups if g not in known]
    if unknown:
        raise SpecError([Problem(plan.file, None, "--group", f"no group {g!r} in {plan.name}; its groups: "
                                 f"{', '.join(known)}") for g in unknown])  # fmt: skip
    by_key = {r.key: r for r in plan.runs}
    needed = {r.key for r in plan.runs if r.group in groups}
    frontier = list(needed)
    while frontier:
        for _, key in by_key[frontier.pop()].upstream:
            if key not in needed:
                needed.add(key)
                frontier.append(key)
    return dataclasses.replace(plan, runs=[r for r in plan.runs if r.key in needed])


def _check_integers(doc: SourcedYaml, overrides: list[Override]) -> None:
    """Integers outside INTEGER_RANGE, anywhere in the spec or an override: the database and the
    engine could not take them, and they would fail only when a run starts."""
    low, high = INTEGER_RANGE
    problems = []

    def visit(value: Any, path: tuple, where: str | None) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, path + (key,), where)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                visit(item, path + (i,), where)
        elif isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            message = f"the integer {value} is outside the range {low} to {high}"
            if where is None:
                problems.append(Problem(doc.file, doc.line_of(path), ".".join(map(str, path)), message))
            else:
                problems.append(Problem("--set", None, ".".join(map(str, path)), f"{message}, from {where}"))

    visit(doc.value, (), None)
    for o in overrides:
        visit(o.value, o.key, f"--set {o.text}")
    if problems:
        raise SpecError(_dedupe(problems))


def _check_size(spec: SpecFile, doc: SourcedYaml, max_runs: int) -> None:
    """Refuse a spec of more than `max_runs` runs, naming the line of its largest sweep."""
    shared = sweep_size(spec.sweep)
    sizes = {g: sweep_size(body.get("sweep")) for g, body in spec.groups.items()}
    total = shared * sum(sizes.values())
    if total > max_runs:
        largest = max(sizes, key=sizes.get)
        where = ("sweep",) if shared >= sizes[largest] else ("groups", largest, "sweep")
        raise SpecError([Problem(doc.file, doc.line_of(where), ".".join(where),
                                 f"the spec expands to {total:,} runs, more than the limit of {max_runs:,}; "
                                 f"pass --max-runs {total} to plan them")])


def _expand(spec: SpecFile, doc: SourcedYaml, overrides: list[Override],
            tasks: TaskRegistry) -> tuple[list[PlannedRun], int]:
    problems: list[Problem] = []
    group_tasks = {g: body.get("task") for g, body in spec.groups.items()}
    accepted = {g: tasks.task_fields(t) if isinstance(t, str) else None for g, t in group_tasks.items()}
    _check_shared_keys(spec, doc, accepted, overrides, problems)
    top_points = expand_sweep(spec.sweep, ("sweep",), doc)
    blocks = Blocks(tasks.RUN_CONFIG, tasks.config_class)
    runs: list[PlannedRun] = []
    seen: set[tuple[str, str]] = set()
    planned: set[str] = set()
    duplicates = 0
    for group, body in spec.groups.items():
        if not re.match(NAME_PATTERN, group):
            problems.append(Problem(doc.file, doc.line_of(("groups", group)), f"groups.{group}",
                                    "group names start with a letter and use letters, digits, _ . -"))
            continue
        fields = accepted[group]
        base = ConfigTree()
        for key, value in spec.defaults.items():
            if fields is None or split_key(key)[0] in fields:
                base.assign(split_key(key), value, ("defaults", key))
        for a in mapping_assignments({k: v for k, v in body.items() if k != "sweep"}, ("groups", group)):
            base.assign(a.key, a.value, a.source)
        group_points = expand_sweep(body.get("sweep"), ("groups", group, "sweep"), doc)
        overridden = tuple(Assignment(o.key, o.value, f"--set {o.text}") for o in overrides
                           if fields is None or o.key[0] in fields)
        validator = GroupValidator(blocks, base)
        tops = [tuple(a for a in top if fields is None or a.key[0] in fields) for top in top_points]
        for top, own in itertools.product(tops, group_points):
            point: Point = top + own + overridden
            validated = validator.validate(point)
            if validated is None:
                tree = base.copy()
                for a in point:
                    tree.assign(a.key, a.value, a.source)
                try:
                    validated = validate_whole(tasks.RUN_CONFIG, tree.value)
                except ValidationError as err:
                    problems.extend(_run_problems(err, doc, tree, group))
                    if len(problems) >= MAX_PROBLEMS * 4:
                        break
                    continue
            before = len(seen)
            _add_run(validated, group, runs, seen, planned, tasks)
            duplicates += len(seen) == before
    if problems:
        raise SpecError(_dedupe(problems))
    return runs, duplicates


def _add_run(run: Validated, group: str, runs: list[PlannedRun], seen: set[tuple[str, str]],
             planned: set[str], tasks: TaskRegistry) -> None:
    """Plan `run` in `group` after the runs it needs (in groups `<group>.<name>`, unless they are
    planned already), so the plan lists every run after its upstream runs."""
    upstream = []
    for name, needed in tasks.upstream_configs(run.config).items():
        dumped = needed.model_dump(mode="json")
        needed_key = run_key(needed, dumped)
        if needed_key not in planned:
            _add_run(Validated(needed, dumped, needed_key), f"{group}.{name}", runs, seen, planned, tasks)
        upstream.append((name, needed_key))
    if (run.key, group) not in seen:
        seen.add((run.key, group))
        planned.add(run.key)
        runs.append(PlannedRun(run.key, group, run.config.task, run.config, run.dumped, tuple(upstream)))


def _check_shared_keys(spec, doc, accepted, overrides, problems) -> None:
    """A default, top-level sweep key or override that no group's task accepts is a typo."""
    if any(fields is None for fields in accepted.values()):
        return
    union = frozenset().union(*accepted.values())
    expected = ", ".join(sorted(union))
    for key in spec.defaults:
        if split_key(key)[0] not in union:
            problems.append(Problem(doc.file, doc.line_of(("defaults", key)), f"defaults.{key}",
                                    f"no group's task has a field {split_key(key)[0]!r}; expected one of {expected}"))
    for point in expand_sweep(spec.sweep, ("sweep",), doc)[:1]:
        for a in point:
            if a.key[0] not in union:
                problems.append(Problem(doc.file, doc.line_of(a.source), ".".join(a.key),
                                        f"no group's task has a field {a.key[0]!r}; expected one of {expected}"))
    for o in overrides:
        if o.key[0] not in union:
            problems.append(Problem("--set", None, ".".join(o.key),
                                    f"no group's task has a field {o.key[0]!r}; expected one of {expected}"))


def _location(err_loc: tuple, value: Any, error: dict) -> tuple[tuple[str, ...], bool]:
    """Map a pydantic error location onto keys of the data, dropping union member tags.

    Returns the key path and whether the last element exists in the data (it does not for a
    missing field)."""
    path: list[str] = []
    node = value
    tag_skipped = False
    for part in err_loc:
        if not tag_skipped and isinstance(node, dict) and any(node.get(tag) == part for tag in DISCRIMINATORS):
            tag_skipped = True
            continue
        if isinstance(node, dict) and part in node:
            path.append(part)
            node = node[part]
            tag_skipped = False
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            path.append(part)
            node = node[part]
            tag_skipped = False
        elif isinstance(node, dict) and error["type"] == "missing" and part == err_loc[-1]:
            path.append(part)
            return tuple(path), False
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        if discriminator and isinstance(node, dict):
            return tuple(path) + (discriminator,), discriminator in node
    return tuple(path), True


def _message(error: dict) -> str:
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return "unknown key (not a field here)"
    if error["type"] == "union_tag_not_found":
        discriminator = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
        return f"missing `{discriminator}`, which selects the kind of this block"
    if error["type"] not in ("missing",) and "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r})"
    return message


def _problems_at(err: ValidationError, doc: SourcedYaml, prefix: tuple) -> list[Problem]:
    problems = []
    for error in err.errors():
        path, _ = _location(error["loc"], doc.value, error)
        problems.append(Problem(doc.file, doc.line_of(prefix + path), ".".join(map(str, path)), _message(error)))
    return _dedupe(problems)


def _run_problems(err: ValidationError, doc: SourcedYaml, tree: ConfigTree, group: str) -> list[Problem]:
    problems = []
    for error in err.errors():
        path, present = _location(error["loc"], tree.value, error)
        source: Source | None = tree.source_of(path if present else path[:-1])
        dotted = ".".join(map(str, path))
        message = f"{_message(error)} [group {group}]"
        if isinstance(source, str):
            problems.append(Problem("command line", None, dotted, f"{message}, from {source}"))
        else:
            line = doc.line_of(source) if source is not None else doc.line_of(("groups", group))
            problems.append(Problem(doc.file, line, dotted, message))
    return problems


def check_inputs(plan: ExperimentPlan, tasks: TaskRegistry) -> None:
    """Refuse a plan whose runs need inputs that are missing or corrupt (dataset files), before
    anything runs or is recorded."""
    problems: list[str] = []
    for run in plan.runs:
        problems.extend(p for p in tasks.input_problems(run.config) if p not in problems)
    if problems:
        raise SpecError([Problem(plan.file, None, "", p) for p in problems])


def _has_field(config: dict[str, Any], dotted: str) -> bool:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _check_figures(spec: SpecFile, doc: SourcedYaml, runs: list[PlannedRun]) -> None:
    problems = []
    for name, figure in spec.figures.items():
        for axis in FIGURE_AXES:
            value = getattr(figure, axis)
            if axis == "x" and figure.kind == "scatter":
                continue  # a scatter may plot one metric against another; metrics are known only later
            if value is None or value in FIGURE_BUILTINS or any(_has_field(r.config_json, value) for r in runs):
                continue
            problems.append(Problem(
                doc.file, doc.line_of(("figures", name, axis)), f"figures.{name}.{axis}",
                f"{value!r} is neither a config field of any run nor one of {', '.join(sorted(FIGURE_BUILTINS))}",
            ))
    if problems:
        raise SpecError(problems)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    unique = list(dict.fromkeys(problems))
    if len(unique) > MAX_PROBLEMS:
        more = len(unique) - MAX_PROBLEMS
        unique = unique[:MAX_PROBLEMS] + [Problem(unique[0].file, None, "", f"... and {more} more problems")]
    return unique
