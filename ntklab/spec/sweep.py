"""Sweeps: `grid` (product), `zip` (lockstep, equal lengths) and `cases` (partial configs, each
optionally with its own sweep). A sweep's points are the product of its parts.

A point is a list of assignments `(key path, value, yaml path of the value)`. Dotted keys
(`train.optimizer.lr`) address nested fields.
"""

import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ntklab.errors import Problem, SpecError
from ntklab.spec.yaml_source import Path, SourcedYaml

SWEEP_PARTS = ("grid", "zip", "cases")


@dataclass(frozen=True, eq=False)
class Assignment:
    """Compared and hashed by identity: a sweep's value is one object however many points hold it
    (spec.validation tells points apart by the assignments they hold)."""

    key: tuple[str, ...]
    value: Any
    source: Path | str  # a path in the spec, or the text of a command-line override


Point = tuple[Assignment, ...]


def split_key(key: Hashable) -> tuple[str, ...]:
    """`"train.optimizer.lr"` -> `("train", "optimizer", "lr")`."""
    return tuple(str(key).split("."))


def mapping_assignments(mapping: dict[Any, Any], source: Path) -> list[Assignment]:
    """The assignments of a partial config written with nested and/or dotted keys."""
    return [Assignment(split_key(key), value, source + (key,)) for key, value in mapping.items()]


def expand_sweep(sweep: Any, source: Path, doc: SourcedYaml) -> list[Point]:
    """Every point of the sweep at `source` in `doc`; raises SpecError on a malformed sweep."""
    if sweep is None:
        return [()]
    problems: list[Problem] = []

    def problem(path: Path, message: str) -> None:
        problems.append(Problem(doc.file, doc.line_of(path), ".".join(map(str, path)), message))

    if not isinstance(sweep, dict):
        problem(source, f"a sweep must be a mapping with keys among {', '.join(SWEEP_PARTS)}")
        raise SpecError(problems)
    for key in sweep:
        if key not in SWEEP_PARTS:
            problem(source + (key,), f"unknown sweep kind {key!r}; expected one of {', '.join(SWEEP_PARTS)}")
    if not sweep:
        problem(source, f"an empty sweep; give at least one of {', '.join(SWEEP_PARTS)}")
    parts: list[list[Point]] = []
    for kind in SWEEP_PARTS:
        if kind not in sweep:
            continue
        here = source + (kind,)
        body = sweep[kind]
        if kind == "cases":
            parts.append(_cases(body, here, doc, problem))
        else:
            parts.append(_keyed(kind, body, here, problem))
    if problems:
        raise SpecError(problems)
    points = []
    checked = set()  # the key paths of points found disjoint: the check depends on nothing else
    for combo in itertools.product(*parts):
        point = tuple(itertools.chain.from_iterable(combo))
        keys = tuple(a.key for a in point)
        if keys not in checked:
            check_disjoint(point, doc)
            checked.add(keys)
        points.append(point)
    return points


def sweep_size(sweep: Any) -> int:
    """How many points `expand_sweep` gives for `sweep`, counted without expanding it. A malformed
    part counts as one point: expanding it reports the problem."""
    if not isinstance(sweep, dict):
        return 1
    size = 1
    for kind in SWEEP_PARTS:
        body = sweep.get(kind)
        if kind == "cases" and isinstance(body, list):
            size *= max(1, sum(sweep_size(c.get("sweep")) if isinstance(c, dict) else 1 for c in body))
        elif isinstance(body, dict) and body and all(isinstance(v, list) for v in body.values()):
            lengths = [len(v) for v in body.values()]
            size *= max(1, math.prod(lengths) if kind == "grid" else max(lengths))
    return size


def _keyed(kind: str, body: Any, here: Path, problem) -> list[Point]:
    if not isinstance(body, dict) or not body:
        problem(here, f"`{kind}` must be a non-empty mapping from dotted keys to lists of values")
        return []
    columns = []
    for key, values in body.items():
        if not isinstance(values, list) or not values:
            problem(here + (key,), f"`{kind}` values of {key!r} must be a non-empty list, got {values!r}")
            return []
        columns.append([Assignment(split_key(key), v, here + (key, i)) for i, v in enumerate(values)])
    if kind == "grid":
        return [tuple(c) for c in itertools.product(*columns)]
    lengths = {str(key): len(values) for key, values in body.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
        problem(here, f"`zip` lists must have equal lengths: {listed}")
        return []
    return [tuple(row) for row in zip(*columns)]


def _cases(body: Any, here: Path, doc: SourcedYaml, problem) -> list[Point]:
    if not isinstance(body, list) or not body:
        problem(here, "`cases` must be a non-empty list of partial configs")
        return []
    points: list[Point] = []
    for i, case in enumerate(body):
        if not isinstance(case, dict) or not case:
            problem(here + (i,), "each case must be a non-empty mapping of (dotted) keys to values")
            continue
        own = {k: v for k, v in case.items() if k != "sweep"}
        base = tuple(mapping_assignments(own, here + (i,)))
        for sub in expand_sweep(case.get("sweep"), here + (i, "sweep"), doc):
            point = base + sub
            check_disjoint(point, doc)
            points.append(point)
    return points


def check_disjoint(point: Point, doc: SourcedYaml) -> None:
    """Two parts of one sweep point must not set the same field (or one inside the other)."""
    for a, b in itertools.combinations(point, 2):
        shorter = min(len(a.key), len(b.key))
        if a.key[:shorter] == b.key[:shorter]:
            raise SpecError([
                Problem(
                    doc.file, doc.line_of(b.source), ".".join(b.key),
                    f"set twice in one sweep point (also at line {doc.line_of(a.source)} as {'.'.join(a.key)}); "
                    "a sweep may set each field once",
                )
            ])
