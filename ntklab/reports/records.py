"""Reading an experiment's runs, their params and their metric summaries, in chunks of run ids.

The run listing (reports/runs.py), the figures (reports/figures.py and its parts) and the
notebook API (reports/api.py) read the same records the same way: one query per chunk of CHUNK
run ids, never one query per run, params decoded by `param_value`.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Text, cast, func, select

from ntklab.db.tables import memberships, params, runs, summaries

CHUNK = 500
LARGEST_EXACT_INTEGER = 2**53


def chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def member_rows(conn: Connection, experiment_id: int, *columns, where=None) -> list[Row]:
    """The experiment's memberships joined with their runs, by run id then group: the given run
    columns, and `group_name`; `where` is an extra condition (a compiled filter)."""
    query = (select(runs.c.id, *columns, memberships.c.group_name)
             .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
             .where(memberships.c.experiment_id == experiment_id)
             .order_by(runs.c.id, memberships.c.group_name))
    if where is not None:
        query = query.where(where)
    return list(conn.execute(query))


def param_value(number: float | None, text: str | None, flag: bool | None, json_text: str | None) -> Any:
    """Params store numbers as doubles; whole ones come back as integers (widths, seeds, steps)."""
    if number is not None:
        return int(number) if number.is_integer() and abs(number) < LARGEST_EXACT_INTEGER else number
    if text is not None:
        return text
    if flag is not None:
        return flag
    return json.loads(json_text) if json_text is not None else None


_PARAM_COLUMNS = (params.c.run_id, params.c.key, params.c.value_num, params.c.value_str, params.c.value_bool,
                  cast(params.c.value_json, Text))


def param_values(conn: Connection, ids: Sequence[int], keys: Sequence[str]) -> dict[tuple[int, str], Any]:
    """The given params of the given runs, by (run id, key)."""
    found: dict[tuple[int, str], Any] = {}
    for chunk in chunks(ids):
        query = select(*_PARAM_COLUMNS).where(params.c.run_id.in_(chunk), params.c.key.in_(list(keys)))
        for run_id, key, number, text, flag, json_text in conn.execute(query).all():
            found[(run_id, key)] = param_value(number, text, flag, json_text)
    return found


def run_params(conn: Connection, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Every param of the given runs, by run id then key (in key order)."""
    found: dict[int, dict[str, Any]] = defaultdict(dict)
    for chunk in chunks(ids):
        query = select(*_PARAM_COLUMNS).where(params.c.run_id.in_(chunk)).order_by(params.c.run_id, params.c.key)
        for run_id, key, number, text, flag, json_text in conn.execute(query):
            found[run_id][key] = param_value(number, text, flag, json_text)
    return found


def params_signature(values: dict[str, Any], excluded: Sequence[str] | set[str] = ()) -> tuple:
    """A run's params other than `excluded`, as a hashable value: runs with equal signatures
    differ only in the excluded params."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in values.items() if k not in excluded))


def differing_params(conn: Connection, ids: Sequence[int]) -> list[str]:
    """Keys that some of the runs lack or that take more than one value, sorted.

    Distinct (key, value) pairs are counted in the database per chunk, so only the few distinct
    values of a sweep travel, not every run's params.
    """
    as_text = cast(params.c.value_json, Text)
    values: dict[str, set[tuple]] = defaultdict(set)
    present: Counter[str] = Counter()
    for chunk in chunks(ids):
        columns = (params.c.key, params.c.value_num, params.c.value_str, params.c.value_bool, as_text)
        query = select(*columns, func.count()).where(params.c.run_id.in_(chunk)).group_by(*columns)
        for key, number, text, flag, json_text, count in conn.execute(query):
            values[key].add((number, text, flag, json_text or "null"))
            present[key] += count
    return sorted(k for k in values if len(values[k]) > 1 or present[k] < len(ids))


def summary_rows(conn: Connection, ids: Sequence[int], names: Sequence[str] | None = None) -> dict[tuple[int, str], Row]:
    """The metric summaries (last, min, max and their steps) of the runs, by (run id, name); of
    the named metrics, or of all when `names` is None."""
    found: dict[tuple[int, str], Row] = {}
    for chunk in chunks(ids):
        query = (select(summaries.c.run_id, summaries.c.name, summaries.c.last, summaries.c.last_step,
                        summaries.c.min, summaries.c.min_step, summaries.c.max, summaries.c.max_step)
                 .where(summaries.c.run_id.in_(chunk)).order_by(summaries.c.run_id, summaries.c.name))
        if names is not None:
            query = query.where(summaries.c.name.in_(list(names)))
        for row in conn.execute(query).all():
            found[(row.run_id, row.name)] = row
    return found
