"""Printing tables as rich tables, CSV or JSON: the formats every listing command offers."""

import csv
import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

from rich.console import Console
from rich.table import Table
from rich.text import Text

Format = Literal["table", "csv", "json"]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cell_text(value: Any, missing: str = "-") -> str:
    """How a value reads in a table cell, on a terminal or in a report."""
    if value is None:
        return missing
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def duration_text(seconds: float | None) -> str:
    """`45s`, `12m05s`, `3h20m`; `-` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def size_text(size: int) -> str:
    """`512 B`, `3.4 KiB`, `1.2 GiB`."""
    if size < 1024:
        return f"{size} B"
    value, unit = float(size), "B"
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def records(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (timestamps in ISO format, NaN and infinities as None)."""
    return [{c: _plain(v) for c, v in zip(columns, row)} for row in rows]


def write_json(value: Any, console: Console) -> None:
    console.file.write(json.dumps(value, indent=1, default=str) + "\n")


def emit(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: Format, console: Console,
         title: str | None = None) -> None:
    if fmt == "json":
        write_json(records(columns, rows), console)
    elif fmt == "csv":
        writer = csv.writer(console.file, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if v is None else _plain(v) for v in row])
    else:
        table = Table(title=title, show_lines=False, header_style="bold")
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell_text(v)) for v in row))  # cells are text, never markup
        console.print(table)
