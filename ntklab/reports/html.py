"""`ntklab report`: one self-contained HTML file for an experiment.

The page holds every figure of the experiment as an embedded PNG (a data URI) with its table
beneath, the runs (status, the params that differ, final metrics, duration), failures with their
error, provenance and the spec itself. It needs no network to be viewed: inline CSS, no
JavaScript, no external URL. Every piece of text from the database or the spec is escaped
(`_e`); markup comes only from this module.
"""

import base64
import html
import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, select

from ntklab.db.tables import RunStatus
from ntklab.db.tables import experiments, memberships, runs
from ntklab.errors import UsageError
from ntklab.flatten import flatten
from ntklab.redaction import redact
from ntklab.reports.figures import FigureData, FigureProblem, experiment_figures
from ntklab.reports.images import ImageFigureData
from ntklab.reports.overview import experiment_status
from ntklab.reports.runs import list_runs
from ntklab.spec.models import Figure
from ntklab.tabular import cell_text

MAX_FIGURE_ROWS = 120
STEPS_SHOWN = 11
MAX_RUN_ROWS = 5000
MAX_MISSING_LISTED = 50
MAX_PROVENANCE_VALUES = 6
TRACEBACK_CHARS = 4000
STATUSES = [s.value for s in RunStatus]


CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       margin: 0 auto; max-width: 1280px; padding: 1.5em 2em 4em; color: #1b1f24; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.35em; border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1.1em; margin: 1.6em 0 0.3em; }
.muted { color: #57606a; }
.caption { color: #57606a; margin: 0.2em 0 0.6em; }
nav ul { columns: 3; list-style: none; padding-left: 0; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 12.5px; }
th, td { border: 1px solid #d0d7de; padding: 2px 7px; text-align: left; vertical-align: top; }
th { background: #f3f5f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafbfc; }
.scroll { max-height: 32em; overflow: auto; display: inline-block; max-width: 100%; }
img.plot { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
pre { background: #f6f8fa; padding: 0.8em; overflow: auto; font-size: 12px; max-height: 40em; }
.status-done { color: #1a7f37; } .status-failed, .status-diverged { color: #cf222e; font-weight: 600; }
.status-pending, .status-running, .status-interrupted { color: #9a6700; }
.warning { border-left: 4px solid #d4a72c; background: #fff8c5; padding: 0.4em 0.8em; margin: 0.6em 0; }
.error { border-left: 4px solid #cf222e; background: #ffebe9; padding: 0.4em 0.8em; margin: 0.6em 0; }
details summary { cursor: pointer; }
"""


def _e(value: Any) -> str:
    """Escaped text of any value (the only way text enters the page)."""
    return html.escape(cell_text(value, missing="–"), quote=True)


def _table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *, status_column: str | None = None,
           scroll: bool = False) -> str:
    index = columns.index(status_column) if status_column in columns else None
    out = ['<div class="scroll">' if scroll else "", "<table><thead><tr>"]
    out += [f"<th>{_e(c)}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>")
        for i, value in enumerate(row):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            css = ' class="num"' if number else ""
            if i == index and isinstance(value, str):
                css = f' class="status-{_e(value)}"'
            out.append(f"<td{css}>{_e(value)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>" + ("</div>" if scroll else ""))
    return "".join(out)


def render_report(conn: Connection, experiment: str, *, figures: dict[str, Figure] | None = None,
                  spec_text: str | None = None, spec_file: str | None = None, home: Path | None = None,
                  now: datetime | None = None, problems: list[str] | None = None) -> str:
    """The report of `experiment` as HTML text. `figures` and `spec_text` (from a spec file) replace
    the stored spec's, so figure declarations can be edited without running anything again.
    Images figures read their artifacts from `home`. Figures that cannot be computed are shown
    with their error, and added to `problems`."""
    from ntklab.reports.plots import render_png

    record = conn.execute(select(experiments).where(experiments.c.name == experiment)).first()
    if record is None:
        known = list(conn.execute(select(experiments.c.name).order_by(experiments.c.name)).scalars())
        raise UsageError(f"no experiment named {experiment!r} in the database (run its spec first); "
                         f"known: {', '.join(known) or 'none yet'}")
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    groups = experiment_status(conn, experiment)
    totals = Counter()
    for g in groups:
        totals.update(g.counts)
    total = sum(totals.values())
    results = experiment_figures(conn, experiment, figures, home)
    if problems is not None:
        problems += [r.message for r in results if isinstance(r, FigureProblem)]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(experiment)} — ntklab report</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>{_e(experiment)}</h1>",
    ]
    if record.description:
        parts.append(f"<p>{_e(record.description)}</p>")
    parts.append(f'<p class="muted">Report generated {_e(generated)} by ntklab from its result database. '
                 f"Spec hash {_e(record.spec_hash[:16])}; experiment recorded {_e(record.created_at)}, "
                 f"last updated {_e(record.updated_at)}.</p>")
    summary = ", ".join(f"{totals[s]} {s}" for s in STATUSES if totals.get(s))
    parts.append(f"<p><strong>{total} runs</strong>: {_e(summary or 'none')}.</p>")
    if total and totals.get("done", 0) < total:
        parts.append(f'<p class="warning">This experiment is not finished: {total - totals.get("done", 0)} of '
                     f"{total} runs are not done. Figures show what is in the database; each table says what "
                     "every point is still missing.</p>")
    parts.append(_contents(results))
    parts.append('<h2 id="status">Runs by group and status</h2>')
    parts.append(_table(["group", *STATUSES, "total"],
                        [[g.group, *(g.counts.get(s, 0) for s in STATUSES), sum(g.counts.values())] for g in groups]))
    parts.append('<h2 id="figures">Figures</h2>')
    if not results:
        parts.append('<p class="muted">The spec declares no figures (add a <code>figures:</code> section).</p>')
    for result in results:
        parts.append(_figure_section(result, render_png))
    parts.append(_runs_section(conn, experiment))
    parts.append(_failures_section(conn, record.id))
    parts.append(_provenance_section(conn, record.id))
    parts.append(_spec_section(record, spec_text, spec_file))
    parts.append("</body></html>")
    return "\n".join(parts)


def _contents(results: list) -> str:
    items = [f'<li><a href="#{_anchor(r)}">{_e(_figure_name(r))}</a></li>' for r in results]
    sections = [("status", "Runs by status"), ("runs", "Runs"), ("failures", "Failures"),
                ("provenance", "Provenance"), ("spec", "Spec")]
    items += [f'<li><a href="#{a}">{_e(t)}</a></li>' for a, t in sections]
    return f"<nav><ul>{''.join(items)}</ul></nav>"


def _figure_name(result: FigureData | ImageFigureData | FigureProblem) -> str:
    if isinstance(result, FigureData) and result.figure.title:
        return f"{result.name}: {result.figure.title}"
    return result.name


def _anchor(result: FigureData | ImageFigureData | FigureProblem) -> str:
    return "figure-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in result.name)


def _figure_section(result: FigureData | ImageFigureData | FigureProblem, render_png) -> str:
    if isinstance(result, FigureProblem):
        return f'<h3 id="{_anchor(result)}">{_e(result.name)}</h3><p class="error">{_e(result.message)}</p>'
    data = result
    out = [f'<h3 id="{_anchor(data)}">{_e(_figure_name(data))}</h3>',
           f'<p class="caption">{_e(data.describe())}</p>']
    try:
        png = render_png(data)
    except Exception as err:  # noqa: BLE001 - a plot that fails must not lose the rest of the report
        png = None
        out.append(f'<p class="error">The plot could not be drawn: {_e(type(err).__name__)}: {_e(err)}</p>')
    if png is not None:
        encoded = base64.b64encode(png).decode("ascii")
        shown = data.figure.artifact if isinstance(data, ImageFigureData) else ", ".join(a.text for a in data.y)
        alt = f"{data.name}: {data.figure.title or shown}"
        out.append(f'<p><img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{encoded}"></p>')
    elif data.figure.kind != "table":
        out.append('<p class="warning">Nothing to plot yet: no run of this figure has finished with a value.</p>')
    rows, note = _shown_rows(data)
    out.append(_table(data.columns, rows, scroll=True))
    if note:
        out.append(f'<p class="muted">{_e(note)}</p>')
    if data.missing:
        by_reason = Counter(m.reason for m in data.missing)
        listed = ", ".join(f"{n} {r}" for r, n in by_reason.most_common())
        runs_word = "run" if len(data.missing) == 1 else "runs"
        out.append(f'<details><summary>{len(data.missing)} {runs_word} not in this figure yet: {_e(listed)}</summary>')
        shown = data.missing[:MAX_MISSING_LISTED]
        out.append(_table(["run", "group", "status", "reason", "error"],
                          [[m.key[:12], m.group, m.status, m.reason, (m.error or "")[:300]] for m in shown],
                          status_column="status"))
        if len(data.missing) > len(shown):
            out.append(f'<p class="muted">and {len(data.missing) - len(shown)} more.</p>')
        out.append("</details>")
    return "\n".join(out)


def _shown_rows(data: FigureData) -> tuple[list[list[Any]], str | None]:
    """The figure's table, thinned to a few steps per curve when it has a row per step."""
    rows = data.rows
    if len(rows) <= MAX_FIGURE_ROWS:
        return rows, None
    command = f"ntklab query --paper {data.experiment}:{data.name} --format csv"
    if data.figure.step == "all" and data.x.kind == "step":
        steps = sorted({p.x for p in data.points if p.x is not None})
        if len(steps) > STEPS_SHOWN:
            picked = {steps[round(i * (len(steps) - 1) / (STEPS_SHOWN - 1))] for i in range(STEPS_SHOWN)}
            kept = [r for r, p in zip(rows, data.points) if p.x is None or p.x in picked]
            if len(kept) <= MAX_FIGURE_ROWS * 4:
                return kept, (f"Showing {STEPS_SHOWN} of {len(steps)} evaluation steps ({len(kept)} of {len(rows)} "
                              f"rows); `{command}` prints every row.")
    return rows[:MAX_FIGURE_ROWS], f"Showing the first {MAX_FIGURE_ROWS} of {len(rows)} rows; `{command}` prints every row."


def _runs_section(conn: Connection, experiment: str) -> str:
    table = list_runs(conn, experiment=experiment)
    columns = list(table.columns)
    key_index = columns.index("key") if "key" in columns else None
    times = {}
    query = (select(runs.c.key, runs.c.started_at, runs.c.finished_at, runs.c.attempts)
             .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
             .join(experiments, experiments.c.id == memberships.c.experiment_id)
             .where(experiments.c.name == experiment))
    for key, started, finished, attempts in conn.execute(query):
        times[key] = (_duration(started, finished), attempts)
    rows = []
    for row in table.rows[:MAX_RUN_ROWS]:
        key = row[key_index] if key_index is not None else None
        duration, attempts = times.get(key, (None, None))
        shown = [v[:12] if i == key_index and isinstance(v, str) else v for i, v in enumerate(row)]
        rows.append(shown + [duration, attempts])
    caption = ('<p class="caption">Each run with its status, the params that differ between runs, the last value '
               "of the metrics every finished run has, its duration (start of the last attempt to finish) and "
               "attempts.</p>")
    out = ['<h2 id="runs">Runs</h2>', caption,
           _table(columns + ["duration", "attempts"], rows, status_column="status", scroll=True)]
    if len(table.rows) > MAX_RUN_ROWS:
        out.append(f'<p class="muted">Showing {MAX_RUN_ROWS} of {len(table.rows)} runs.</p>')
    return "\n".join(out)


def _duration(started: datetime | None, finished: datetime | None) -> str | None:
    if started is None or finished is None:
        return None
    seconds = (finished - started).total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _failures_section(conn: Connection, experiment_id: int) -> str:
    query = (select(runs.c.key, memberships.c.group_name, runs.c.status, runs.c.error_type, runs.c.error_message,
                    runs.c.traceback, runs.c.attempts, runs.c.finished_at)
             .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
             .where(memberships.c.experiment_id == experiment_id,
                    runs.c.status.in_([RunStatus.failed, RunStatus.diverged]))
             .order_by(runs.c.id))
    found = conn.execute(query).all()
    out = ['<h2 id="failures">Failures</h2>']
    if not found:
        out.append('<p class="muted">No run failed or diverged.</p>')
        return "\n".join(out)
    out.append(f"<p>{len(found)} runs failed or diverged. `ntklab logs RUN` prints a run's whole log; "
               "`ntklab run SPEC --retry-failed` runs them again.</p>")
    for row in found:
        status = RunStatus(row.status).value
        out.append(f'<h3><code>{_e(row.key[:12])}</code> ({_e(row.group_name)}): '
                   f'<span class="status-{_e(status)}">{_e(status)}</span></h3>')
        out.append(f'<p class="error">{_e(row.error_type or status)}: {_e(redact(row.error_message or ""))}</p>')
        if row.traceback:
            text = redact(row.traceback[-TRACEBACK_CHARS:])
            out.append(f"<details><summary>traceback (attempt {_e(row.attempts)})</summary><pre>{_e(text)}</pre></details>")
    return "\n".join(out)


def _provenance_section(conn: Connection, experiment_id: int) -> str:
    query = (select(runs.c.provenance)
             .select_from(memberships.join(runs, runs.c.id == memberships.c.run_id))
             .where(memberships.c.experiment_id == experiment_id, runs.c.provenance.is_not(None)))
    values: dict[str, Counter] = defaultdict(Counter)
    recorded = 0
    for (provenance,) in conn.execute(query):
        if isinstance(provenance, str):
            try:
                provenance = json.loads(provenance)
            except ValueError:
                continue
        if not isinstance(provenance, dict):
            continue
        recorded += 1
        for key, value in flatten(provenance).items():
            shown = json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else cell_text(value, missing="–")
            values[key][redact(shown)] += 1
    out = ['<h2 id="provenance">Provenance</h2>']
    if not recorded:
        out.append('<p class="muted">No run has started yet, so there is no provenance.</p>')
        return "\n".join(out)
    rows = []
    for key in sorted(values):
        counted = values[key].most_common()
        shown = counted[:MAX_PROVENANCE_VALUES]
        text = "; ".join(v if len(counted) == 1 else f"{v} ({n} runs)" for v, n in shown)
        if len(counted) > len(shown):
            text += f"; and {len(counted) - len(shown)} more values"
        rows.append([key, text])
    out.append(f'<p class="caption">What the {recorded} runs that started ran on: code versions (git commit and '
               "whether the tree was dirty), packages, Python, platform, host and JAX devices. A field with several "
               "values says how many runs had each.</p>")
    out.append(_table(["field", "value"], rows))
    return "\n".join(out)


def _spec_section(record, spec_text: str | None, spec_file: str | None) -> str:
    out = ['<h2 id="spec">Spec</h2>']
    text = spec_text if spec_text is not None else record.spec_text
    source = spec_file or record.spec_file or "stored spec"
    out.append(f'<p class="caption">{_e(source)}</p>')
    if spec_text is not None and spec_text != record.spec_text:
        out.append('<p class="warning">This spec differs from the one stored with the experiment when it last ran; '
                   "the figures above follow this spec, the runs are those of the stored one.</p>")
    out.append(f"<pre>{_e(text)}</pre>")
    if spec_text is not None and spec_text != record.spec_text:
        out.append(f"<details><summary>the stored spec</summary><pre>{_e(record.spec_text)}</pre></details>")
    return "\n".join(out)
