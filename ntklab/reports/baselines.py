"""Baseline matching for figures with `relative_to`: each run's baseline is the experiment's run
whose params equal the figure's `relative_to` values (and `group`, if named) and whose other
params equal the run's own. Baseline runs themselves leave the figure."""

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection

from ntklab.db.tables import RunStatus
from ntklab.db.tables import runs
from ntklab.reports.axes import GROUP
from ntklab.reports.records import member_rows, params_signature, run_params
from ntklab.reports.selection import FigureRun


def attach_baselines(conn: Connection, experiment_id: int, fixed: dict[str, Any],
                     found: list[FigureRun]) -> tuple[list[FigureRun], dict[int, str]]:
    """Set each run's baseline; returns the runs that are not baselines themselves, and the
    status of every run of the experiment (baselines need not match the figure's `where`)."""
    members = member_rows(conn, experiment_id, runs.c.status)
    status = {r.id: RunStatus(r.status).value for r in members}
    groups: dict[int, set[str]] = defaultdict(set)
    for r in members:
        groups[r.id].add(r.group_name)
    ids = sorted(status)
    flat = run_params(conn, ids)

    def is_baseline(run_id: int) -> bool:
        for key, wanted in fixed.items():
            if key == GROUP:
                if wanted not in groups[run_id]:
                    return False
            elif not same_value(flat[run_id].get(key), wanted):
                return False
        return True

    by_signature: dict[tuple, int] = {}
    for run_id in ids:
        if is_baseline(run_id):
            by_signature.setdefault(params_signature(flat[run_id], fixed), run_id)
    kept = []
    for run in found:
        if is_baseline(run.run_id):
            continue
        run.baseline = by_signature.get(params_signature(flat[run.run_id], fixed))
        kept.append(run)
    return kept, status


def same_value(value: Any, wanted: Any) -> bool:
    """A param's value equals a value written in a spec (numbers by value, booleans by identity)."""
    if isinstance(wanted, bool) or isinstance(value, bool):
        return value is wanted
    if isinstance(wanted, (int, float)) and isinstance(value, (int, float)):
        return float(value) == float(wanted)
    return value == wanted
