"""What every command shares: the Typer apps, the consoles, exit codes, options, error reporting, engines."""

import functools
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from ntklab.errors import DatabaseError, SpecError, UsageError
from ntklab.redaction import RedactingStream, redact

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Declarative experiments on neural tangent kernels, recorded in a database.")
db_app = typer.Typer(no_args_is_help=True, help="Database administration.")
app.add_typer(db_app, name="db")

out = Console(file=RedactingStream("stdout"), soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(file=RedactingStream("stderr"), width=None if sys.stderr.isatty() else 200)

EXIT_FAILED_RUNS = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


DbOption = Annotated[Optional[str], typer.Option("--db", help="database URL (default: NTKLAB_DB, else SQLite in the home)")]
HomeOption = Annotated[Optional[Path], typer.Option("--home", help="home directory (default: NTKLAB_HOME, else ./.ntklab)")]
SetOption = Annotated[Optional[list[str]], typer.Option("--set", help="override a config key: KEY=VALUE (repeatable)")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")]
SpecGroupOption = Annotated[Optional[list[str]], typer.Option(
    "--group", "-g", help="only this group of the spec, with the upstream runs it needs (repeatable)")]


def reported(command):
    """Turn the errors users can cause into a clear message and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpecError as error:
            for problem in error.problems:
                err.print(f"[red]error[/red] {problem}", highlight=False, markup=True, soft_wrap=True)
            err.print("nothing was run and the database was not changed", style="dim")
            raise typer.Exit(EXIT_USAGE) from None
        except UsageError as error:
            err.print(f"[red]error[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except DatabaseError as error:
            err.print(f"[red]database error[/red] {error}", highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except SQLAlchemyError as error:
            url = getattr(error, "url", None)
            detail = redact(str(getattr(error, "orig", None) or error).splitlines()[0])
            err.print(f"[red]database error[/red] {detail}" + (f" ({redact(str(url))})" if url else ""), highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None

    return wrapper


def open_home_engine(db: str | None, home_dir: Path | None, *, create: bool):
    from ntklab.db.connection import open_engine, resolve_url
    from ntklab.db.schema import ensure_schema
    from ntklab.store import Home, resolve_home

    home = Home(resolve_home(home_dir))
    engine = open_engine(resolve_url(db, home.root))
    if create:
        ensure_schema(engine)
    return engine, home


def sqlite_file_missing(db: str | None, home_dir: Path | None) -> str | None:
    """The path of the SQLite file the command would use, if that file does not exist yet."""
    from ntklab.db.connection import resolve_url
    from ntklab.store import resolve_home

    url = resolve_url(db, resolve_home(home_dir))
    path = url.removeprefix("sqlite:///")
    return path if url.startswith("sqlite:///") and not Path(path).exists() else None


def existing_engine(db: str | None, home_dir: Path | None):
    """For read-only commands: an engine on a database that must already hold results."""
    missing = sqlite_file_missing(db, home_dir)
    if missing:
        raise DatabaseError(f"no database at {missing}: run a spec first, or pass --db/--home")
    return open_home_engine(db, home_dir, create=True)
