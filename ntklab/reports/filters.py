"""The filter language of `--where` and of figure `where:`, compiled to SQLAlchemy conditions on runs.

An expression is parsed by Python's `ast` (never evaluated) and only the node types handled here are
accepted: `and`/`or`/`not`, comparisons (chained ones too), `in`/`not in` over lists of literals,
literals, dotted field names and the quoted field forms `param("key")`, `metric("name")`,
`metric("name", "max")` and `metric("name").max`. Literal values always travel as bound parameters.

A field name resolves, in this order, to a run attribute (`RUN_ATTRIBUTES`), a param key, or a
metric name with an optional `.last`/`.min`/`.max` suffix (default last). The prefixes `run.`,
`param.` and `metric.` pick a namespace explicitly and win when they resolve; otherwise the whole
dotted name is resolved as above, so a config section named `run` or `metric` still works.

Every comparison is two-valued, so `not` is plain SQL NOT: `not (train.lr < 0.1)` also selects
runs that have no `train.lr` at all. For a param or a metric, `!=` and `not in` select runs that
have the field and whose value differs (`x != 1` leaves out runs without `x`); `is None` selects
runs without a value (no row, a null value, or a NaN metric). `group` and `experiment` are sets
(a run can belong to several): `==` and `in` ask for membership, `!=` and `not in` for none.
"""

import ast
import difflib
import json
import keyword
import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Connection, Text, and_, cast, false, func, not_, or_, select, true

from ntklab.db.tables import RunStatus
from ntklab.db.tables import experiments, memberships, params, runs, summaries
from ntklab.errors import UsageError

RUN_COLUMNS = {
    "status": runs.c.status,
    "task": runs.c.task,
    "key": runs.c.key,
    "attempts": runs.c.attempts,
    "worker": runs.c.worker_id,
    "host": runs.c.host,
    "created_at": runs.c.created_at,
    "started_at": runs.c.started_at,
    "finished_at": runs.c.finished_at,
    "error_type": runs.c.error_type,
}
MEMBERSHIP_ATTRIBUTES = ("group", "experiment")
RUN_ATTRIBUTES = (*RUN_COLUMNS, *MEMBERSHIP_ATTRIBUTES)
STATS = ("last", "min", "max")
STATUSES = tuple(s.value for s in RunStatus)
MAX_LENGTH = 10_000
LARGEST_INTEGER = 2**63

_WORDS = {"true": True, "false": False, "null": None}
_FLIPPED = {ast.Lt: ast.Gt, ast.LtE: ast.GtE, ast.Gt: ast.Lt, ast.GtE: ast.LtE}
_ORDERINGS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_ODD_NAME = re.compile(r"[A-Za-z_]\w*(?:[./-]\w+)+")
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


class FilterError(UsageError):
    """A filter or column expression that cannot be compiled; the message says where and why."""

    def __init__(self, message: str, column: int | None = None):
        super().__init__(message)
        self.column = column


@dataclass(frozen=True)
class RunField:
    name: str


@dataclass(frozen=True)
class ParamField:
    key: str


@dataclass(frozen=True)
class MetricField:
    name: str
    stat: str = "last"


Field = RunField | ParamField | MetricField


@dataclass(frozen=True)
class Vocabulary:
    """The param keys and metric names in the database: what a bare name can refer to."""

    param_keys: frozenset[str]
    metric_names: frozenset[str]

    @classmethod
    def load(cls, conn: Connection) -> "Vocabulary":
        keys = conn.execute(select(params.c.key).distinct()).scalars()
        names = conn.execute(select(summaries.c.name).distinct()).scalars()
        return cls(frozenset(keys), frozenset(names))


def resolve_name(name: str, vocabulary: Vocabulary) -> Field | None:
    """The field a dotted name refers to, or None (see the module docstring for the rules)."""
    namespace, _, rest = name.partition(".")
    if rest:
        if namespace == "run" and rest in RUN_ATTRIBUTES:
            return RunField(rest)
        if namespace == "param" and rest in vocabulary.param_keys:
            return ParamField(rest)
        if namespace == "metric" and (metric := _metric(rest, vocabulary)) is not None:
            return metric
    if name in RUN_ATTRIBUTES:
        return RunField(name)
    if name in vocabulary.param_keys:
        return ParamField(name)
    return _metric(name, vocabulary)


def _metric(name: str, vocabulary: Vocabulary) -> MetricField | None:
    if name in vocabulary.metric_names:
        return MetricField(name)
    base, _, stat = name.rpartition(".")
    if stat in STATS and base in vocabulary.metric_names:
        return MetricField(base, stat)
    return None


def field_label(field: Field, vocabulary: Vocabulary) -> str:
    """The shortest text in this language that names `field` again (for column headers)."""
    if isinstance(field, RunField):
        return field.name
    if isinstance(field, ParamField):
        return _shortest(field, [field.key, f"param.{field.key}"], vocabulary) or f"param({_quoted(field.key)})"
    suffix = "" if field.stat == "last" else f".{field.stat}"
    plain = _shortest(field, [field.name + suffix, f"metric.{field.name}{suffix}"], vocabulary)
    return plain or f"metric({_quoted(field.name)}){suffix}"


def _shortest(field: Field, texts: Iterable[str], vocabulary: Vocabulary) -> str | None:
    return next((t for t in texts if _is_plain_name(t) and resolve_name(t, vocabulary) == field), None)


def _is_plain_name(text: str) -> bool:
    return text not in _WORDS and all(p.isidentifier() and not keyword.iskeyword(p) for p in text.split("."))


def _quoted(text: str) -> str:
    """A double-quoted string literal (JSON's escapes are valid Python ones)."""
    return json.dumps(text, ensure_ascii=False)


def parse_status(text: str) -> RunStatus:
    """A status name, or a UsageError naming the valid ones."""
    if text not in STATUSES:
        raise UsageError(_status_problem(text))
    return RunStatus(text)


def _status_problem(value: str) -> str:
    guesses = difflib.get_close_matches(value, STATUSES, n=1)
    hint = f"; did you mean {guesses[0]!r}?" if guesses else ""
    return f"unknown status {value!r} (statuses are {', '.join(STATUSES)}){hint}"


def parse_field(text: str, vocabulary: Vocabulary) -> Field:
    """A column name in the filter language: `train.lr`, `test_accuracy.max`, `metric("a/b")`."""
    source = _Source(text)
    return _field(source.parse(), source, vocabulary)


def compile_filter(expression: str, conn: Connection, *, experiment_id: int | None = None) -> ColumnElement[bool]:
    """A condition on the `runs` table for `select(runs).where(...)`.

    With `experiment_id`, `group` compares the run's groups within that experiment only.
    """
    source = _Source(expression)
    tree = source.parse()
    try:
        return _Compiler(source, Vocabulary.load(conn), experiment_id).condition(tree)
    except RecursionError:
        raise FilterError("the filter is nested too deeply") from None


class _Source:
    """The expression text, and error messages that point into it."""

    def __init__(self, text: str):
        self.text = text.strip()

    def parse(self) -> ast.expr:
        if not self.text:
            raise FilterError("the expression is empty")
        if len(self.text) > MAX_LENGTH:
            raise FilterError(f"the expression is longer than {MAX_LENGTH} characters")
        try:
            return ast.parse(self.text, mode="eval").body
        except SyntaxError as err:
            lines = self.text.splitlines() or [""]
            line = min(max(err.lineno or 1, 1), len(lines))
            column = err.offset if err.offset and err.offset > 0 else len(lines[line - 1]) + 1
            raise self._error(f"syntax error: {err.msg}{self._hint()}", line, column) from None
        except (ValueError, RecursionError, MemoryError) as err:
            raise FilterError(f"cannot parse the expression: {err}") from None

    def _hint(self) -> str:
        """What may be wrong: a name Python cannot parse (`a.0.b`, `model.lambda`) or line breaks."""
        for name in _ODD_NAME.findall(_STRING.sub("", self.text)):
            parts = name.split(".")
            if "-" in name or "/" in name or any(keyword.iskeyword(p) or p[0].isdigit() for p in parts):
                return f'; write a name like {name!r} quoted, as param("{name}") or metric("{name}")'
        if "\n" in self.text:
            return "; wrap a filter of several lines in parentheses"
        return ""

    def error(self, message: str, node: ast.AST) -> FilterError:
        line = self.text.splitlines()[node.lineno - 1]
        column = len(line.encode()[: node.col_offset].decode(errors="ignore")) + 1
        return self._error(message, node.lineno, column)

    def _error(self, message: str, line: int, column: int) -> FilterError:
        lines = self.text.splitlines() or [""]
        where = f"line {line}, column {column}" if len(lines) > 1 else f"column {column}"
        caret = " " * (column - 1) + "^"
        return FilterError(f"{message} (at {where})\n  {lines[line - 1]}\n  {caret}", column)


def _field(node: ast.expr, source: _Source, vocabulary: Vocabulary) -> Field:
    if isinstance(node, ast.Call):
        return _called_field(node, source, vocabulary)
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Call):
        return _called_metric_stat(node, source, vocabulary)
    if isinstance(node, ast.BinOp):
        raise source.error(_operator_hint(node, source.text), node)
    name = _dotted_name(node)
    if name is None:
        raise source.error(f"expected a field name, not {_describe(node)}", node)
    field = resolve_name(name, vocabulary)
    if field is None:
        raise source.error(_unknown(name, _all_names(vocabulary)), node)
    return field


def _operator_hint(node: ast.BinOp, text: str) -> str:
    """Arithmetic is not part of the language; say what was probably meant."""
    if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
        word = "and" if isinstance(node.op, ast.BitAnd) else "or"
        return f"write '{word}' to combine conditions"
    if isinstance(node.op, (ast.Div, ast.Sub)):
        name = ast.get_source_segment(text, node)
        return f'a name with "/" or "-" is written quoted, as metric("{name}") or param("{name}")'
    return "arithmetic is not supported; compare a field with a value"


def _dotted_name(node: ast.expr) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def _called_field(node: ast.Call, source: _Source, vocabulary: Vocabulary) -> Field:
    function = node.func.id if isinstance(node.func, ast.Name) else None
    if function not in ("param", "metric"):
        raise source.error('the only functions are param("key") and metric("name", "last"|"min"|"max")', node)
    arguments = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    most = 1 if function == "param" else 2
    if node.keywords or len(arguments) != len(node.args) or not 1 <= len(arguments) <= most:
        usage = 'param("key")' if function == "param" else 'metric("name") or metric("name", "max")'
        raise source.error(f"write {usage}, with quoted strings", node)
    if function == "param":
        if arguments[0] not in vocabulary.param_keys:
            raise source.error(_unknown(arguments[0], vocabulary.param_keys, "param"), node)
        return ParamField(arguments[0])
    name, stat = arguments[0], (arguments[1] if len(arguments) == 2 else "last")
    if stat not in STATS:
        raise source.error(f"unknown metric statistic {stat!r}; use one of {', '.join(STATS)}", node)
    if name not in vocabulary.metric_names:
        raise source.error(_unknown(name, vocabulary.metric_names, "metric"), node)
    return MetricField(name, stat)


def _called_metric_stat(node: ast.Attribute, source: _Source, vocabulary: Vocabulary) -> MetricField:
    """`metric("a/b").max`: the same as `metric("a/b", "max")`, without a comma (for column lists)."""
    field = _called_field(node.value, source, vocabulary)
    if not isinstance(field, MetricField) or len(node.value.args) != 1 or node.attr not in STATS:
        raise source.error('write metric("name").last, .min or .max', node)
    return MetricField(field.name, node.attr)


def _unknown(name: str, candidates: Iterable[str], kind: str = "field") -> str:
    """The message for an unknown name, with the names it may have meant: those with the same last
    part (`lr` -> `train.optimizer.lr`), then close spellings."""
    pool = sorted(set(candidates))
    namespace, _, rest = name.partition(".")
    target = rest if namespace in ("run", "param", "metric") and rest else name
    tail = target.rpartition(".")[2]
    guesses = [c for c in pool if c.endswith("." + tail)]
    guesses += [c for c in difflib.get_close_matches(target, pool, n=3, cutoff=0.6) if c not in guesses]
    if guesses:
        return f"unknown {kind} {name!r}; did you mean {', '.join(guesses[:5])}?"
    if kind == "field":
        return (f"unknown field {name!r}: no run attribute, param key or metric name is called so "
                "(quote text values: 'like this')")
    return f"unknown {kind} {name!r}: no run has it"


def _all_names(vocabulary: Vocabulary) -> set[str]:
    return {*RUN_ATTRIBUTES, *vocabulary.param_keys, *vocabulary.metric_names}


def _is_literal(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Name):
        return node.id in _WORDS
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        return _is_literal(node.operand)
    return False


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Constant):
        return f"the value {node.value!r}"
    if isinstance(node, ast.Name):
        if node.id in _WORDS:
            return f"the value {node.id}"
        return f"the name {node.id!r} (quote text values: 'like this')"
    return f"a {type(node).__name__} expression"


class _Target(ABC):
    """Where a field's values live for a run, and how a literal is compared with them.

    `rows(condition)` is true when the run has a value row satisfying the condition; a
    single-valued target has at most one such row per run, a set-valued one (a run's groups) many.
    """

    set_valued = False
    has_value: ColumnElement[bool]

    @abstractmethod
    def rows(self, condition: ColumnElement[bool]) -> ColumnElement[bool]: ...

    @abstractmethod
    def slot(self, value: Any) -> tuple[Any, Any] | str:
        """The column that holds values like `value` and the value to bind, or why there is none."""


class _ParamTarget(_Target):
    def __init__(self, key: str):
        self.key = key
        self.has_value = or_(
            params.c.value_num.is_not(None), params.c.value_str.is_not(None), params.c.value_bool.is_not(None),
            func.coalesce(cast(params.c.value_json, Text), "null") != "null",
        )

    def rows(self, condition):
        # run_id and key are the primary key: one index probe per run.
        return (select(params.c.run_id).where(params.c.run_id == runs.c.id, params.c.key == self.key, condition)
                .correlate(runs).exists())

    def slot(self, value):
        if isinstance(value, bool):
            return params.c.value_bool, value
        if isinstance(value, (int, float)):
            return params.c.value_num, float(value)
        return params.c.value_str, value


class _MetricTarget(_Target):
    def __init__(self, field: MetricField):
        self.name = field.name
        self.column = summaries.c[field.stat]
        self.has_value = self.column.is_not(None)

    def rows(self, condition):
        return (select(summaries.c.run_id)
                .where(summaries.c.run_id == runs.c.id, summaries.c.name == self.name, condition)
                .correlate(runs).exists())

    def slot(self, value):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.column, float(value)
        return f"metric {self.name!r} compares with numbers"


class _ColumnTarget(_Target):
    def __init__(self, name: str):
        self.name = name
        self.column = RUN_COLUMNS[name]
        self.has_value = self.column.is_not(None) if self.column.nullable else true()

    def rows(self, condition):
        return condition

    def slot(self, value):
        if self.name == "status":
            if not isinstance(value, str):
                return f"status compares with a status name: {', '.join(STATUSES)}"
            if value not in STATUSES:
                return _status_problem(value)
            return self.column, RunStatus(value)
        if self.name == "attempts":
            if isinstance(value, int) and not isinstance(value, bool):
                return self.column, value
            return "attempts compares with whole numbers"
        if self.name.endswith("_at"):
            return _timestamp(self.name, self.column, value)
        if isinstance(value, str):
            return self.column, value
        return f"{self.name} compares with strings"


class _MembershipTarget(_Target):
    set_valued = True

    def __init__(self, name: str, experiment_id: int | None):
        self.name = name
        self.experiment_id = experiment_id
        self.has_value = true()

    def rows(self, condition):
        query = select(memberships.c.run_id).where(memberships.c.run_id == runs.c.id, condition)
        if self.name == "experiment":
            query = query.join(experiments, experiments.c.id == memberships.c.experiment_id)
        elif self.experiment_id is not None:
            query = query.where(memberships.c.experiment_id == self.experiment_id)
        return query.correlate(runs).exists()

    def slot(self, value):
        if not isinstance(value, str):
            return f"{self.name} compares with names (strings)"
        return (experiments.c.name if self.name == "experiment" else memberships.c.group_name), value


def _timestamp(name: str, column, value: Any):
    """Timestamps are stored as naive UTC; an ISO literal with an offset is converted to it."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
            return column, moment
    return f"{name} compares with an ISO date or time, like '2026-01-31' or '2026-01-31T12:00'"


class _Compiler:
    def __init__(self, source: _Source, vocabulary: Vocabulary, experiment_id: int | None):
        self.source = source
        self.vocabulary = vocabulary
        self.experiment_id = experiment_id

    def error(self, message: str, node: ast.AST) -> FilterError:
        return self.source.error(message, node)

    def condition(self, node: ast.expr) -> ColumnElement[bool]:
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v) for v in node.values]
            return and_(*parts) if isinstance(node.op, ast.And) else or_(*parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not_(self.condition(node.operand))
        if isinstance(node, ast.Compare):
            return self.chain(node)
        if _is_literal(node):
            raise self.error(f"{_describe(node)} is not a condition; compare a field with it", node)
        field = _field(node, self.source, self.vocabulary)
        if not isinstance(field, ParamField):
            raise self.error("a field alone is a condition only for a boolean param; compare it with a value", node)
        return self.compare(self.target(field), ast.Eq(), [True], node)

    def chain(self, node: ast.Compare) -> ColumnElement[bool]:
        """`a < b <= c` means `a < b and b <= c`, each link comparing a field with a literal."""
        links, left = [], node.left
        for op, right in zip(node.ops, node.comparators):
            links.append(self.link(left, op, right, node))
            left = right
        return and_(*links) if len(links) > 1 else links[0]

    def link(self, left: ast.expr, op: ast.cmpop, right: ast.expr, node: ast.Compare) -> ColumnElement[bool]:
        if isinstance(op, (ast.In, ast.NotIn)):
            if not isinstance(right, (ast.List, ast.Tuple)):
                raise self.error("'in' takes a list of values, like x in [1, 2]", right)
            values = [self.literal(e) for e in right.elts]
            return self.compare(self.target(_field(left, self.source, self.vocabulary)), op, values, left)
        left_literal, right_literal = _is_literal(left), _is_literal(right)
        if left_literal and right_literal:
            raise self.error("this comparison has two values; compare a field with a value", node)
        if not left_literal and not right_literal:
            for side in (left, right):
                _field(side, self.source, self.vocabulary)
            raise self.error("this comparison has two fields; compare a field with a value", node)
        if left_literal:
            left, right, op = right, left, _FLIPPED.get(type(op), type(op))()
        value = self.literal(right)
        if isinstance(op, (ast.Is, ast.IsNot)) and value is not None:
            raise self.error("'is' compares only with None; use == for values", right)
        return self.compare(self.target(_field(left, self.source, self.vocabulary)), op, [value], left)

    def target(self, field: Field) -> _Target:
        if isinstance(field, ParamField):
            return _ParamTarget(field.key)
        if isinstance(field, MetricField):
            return _MetricTarget(field)
        if field.name in MEMBERSHIP_ATTRIBUTES:
            return _MembershipTarget(field.name, self.experiment_id)
        return _ColumnTarget(field.name)

    def compare(self, target: _Target, op: ast.cmpop, values: Sequence[Any], node: ast.expr) -> ColumnElement[bool]:
        ordering = _ORDERINGS.get(type(op))
        if ordering is not None:
            if values[0] is None or isinstance(values[0], bool):
                raise self.error("<, <=, > and >= compare numbers, strings or times", node)
            column, value = self.slot(target, values[0], node)
            if isinstance(value, RunStatus):
                raise self.error("status has no order; compare it with == or in", node)
            return target.rows(ordering(column, value))
        negated = isinstance(op, (ast.NotEq, ast.NotIn, ast.IsNot))
        with_none = None in values
        matches = self.matches(target, [v for v in values if v is not None], node)
        if not negated:
            found = target.rows(matches) if matches is not None else false()
            return or_(found, not_(target.rows(target.has_value))) if with_none else found
        if target.set_valued:
            return not_(target.rows(matches)) if matches is not None else true()
        differs = not_(matches) if matches is not None else true()
        return target.rows(and_(differs, target.has_value) if with_none else differs)

    def matches(self, target: _Target, values: Sequence[Any], node: ast.expr) -> ColumnElement[bool] | None:
        """The value row equals one of `values`: one IN per column type, never NULL (so NOT is safe)."""
        by_column: dict[str, tuple[Any, list[Any]]] = {}
        for value in values:
            column, bound = self.slot(target, value, node)
            by_column.setdefault(column.key, (column, []))[1].append(bound)
        tests = []
        for column, bound in by_column.values():
            test = column == bound[0] if len(bound) == 1 else column.in_(bound)
            tests.append(and_(column.is_not(None), test) if column.nullable else test)
        return or_(*tests) if tests else None

    def slot(self, target: _Target, value: Any, node: ast.expr) -> tuple[Any, Any]:
        found = target.slot(value)
        if isinstance(found, str):
            raise self.error(found, node)
        return found

    def literal(self, node: ast.expr) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and abs(node.value) > LARGEST_INTEGER:
            raise self.error("the number is too large", node)
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (bool, int, float, str))):
            return node.value
        if isinstance(node, ast.Name) and node.id in _WORDS:
            return _WORDS[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self.literal(node.operand)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
            raise self.error("a sign goes only before a number", node)
        raise self.error(f"expected a number, string, true, false or None, not {_describe(node)}", node)
