"""What every command shares: the Typer apps, the consoles, exit codes, options, error reporting, engines.

Conventions every command follows:

- An experiment is named the same way everywhere: by its name, or by a spec file (its `name:`);
  a positional EXPERIMENT where the command is about one experiment, `--experiment/-e` where it
  filters. Both complete from the database.
- Consoles print plain text (markup off): a message never loses `[...]` to rich markup; styled
  words go through `styled`.
- Imports stay inside commands, so a command that only reads the database never loads JAX.
"""

import functools
import math
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.text import Text

from ntklab import __version__
from ntklab.errors import DatabaseError, SpecError, UsageError
from ntklab.redaction import RedactingStream, redact

EXIT_OK = 0
EXIT_FAILED_RUNS = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}
EXIT_CODES = (
    (EXIT_OK, "success"),
    (EXIT_FAILED_RUNS, "some runs failed (with --strict: or diverged)"),
    (EXIT_USAGE, "usage or spec error; nothing was run"),
    (EXIT_DATABASE, "database error"),
    (SIGNAL_EXIT["SIGINT"], "interrupted (SIGINT, Ctrl-C); run again to resume"),
    (SIGNAL_EXIT["SIGTERM"], "terminated (SIGTERM); run again to resume"),
)
# "\b" keeps click from rewrapping the table.
EXIT_EPILOG = "Exit codes:\n\n\b\n" + "\n".join(f"{code:>5}  {meaning}" for code, meaning in EXIT_CODES)
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, context_settings=CONTEXT,
                  epilog=EXIT_EPILOG, rich_markup_mode=None,
                  help="Declarative experiments on neural tangent kernels, recorded in a database.")
db_app = typer.Typer(no_args_is_help=True, context_settings=CONTEXT, epilog=EXIT_EPILOG,
                     help="Database administration.")
app.add_typer(db_app, name="db")

out = Console(file=RedactingStream("stdout"), soft_wrap=True, markup=False, width=None if sys.stdout.isatty() else 200)
# soft_wrap: a message is never broken into lines by the console (a command in it stays one line to copy)
err = Console(file=RedactingStream("stderr"), soft_wrap=True, markup=False, width=None if sys.stderr.isatty() else 200)


def with_exit_codes(typer_app: typer.Typer) -> typer.Typer:
    """Give every command of `typer_app` and its sub-apps the exit-code table as its help epilog."""
    for command in typer_app.registered_commands:
        command.epilog = command.epilog or EXIT_EPILOG
    for group in typer_app.registered_groups:
        with_exit_codes(group.typer_instance)
    return typer_app


def styled(label: str, style: str, message: object = "") -> Text:
    """`label` in `style`, then the message as plain text (brackets and all)."""
    text = Text(label, style=style)
    if message != "":
        text.append(f" {message}")
    return text


def _print_version(value: bool) -> None:
    if value:
        out.print(f"ntklab {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                                help="print the version and exit")] = False) -> None:
    """Declarative experiments on neural tangent kernels, recorded in a database."""


LEASE_SECONDS = (5.0, 7 * 86400.0)
"""The lease range `--lease-seconds` accepts: workers renew it every third of it, so a shorter one
is lost to an ordinary database stall and two workers take a run from each other over and over."""
MAX_COUNT = 2**63 - 1
"""The largest count (`--limit`, `--max-runs`) a command accepts: what the database can store."""


def finite_between(low: float, high: float, unit: str = ""):
    """A Typer callback accepting a number (or None) from `low` to `high`: click's FloatRange lets
    NaN through, since every comparison with it is false."""

    def check(value: float | None) -> float | None:
        if value is not None and not (math.isfinite(value) and low <= value <= high):
            raise typer.BadParameter(f"must be a number{unit} from {low:g} to {high:g}, got {value}")
        return value

    return check


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


def _connection_params(ctx: typer.Context) -> tuple[str | None, Path | None]:
    return ctx.params.get("db"), ctx.params.get("home")


def _complete(ctx: typer.Context, incomplete: str, names) -> list[str]:
    """Completions read from the database; never an error (a shell is waiting)."""
    try:
        from ntklab.db.connection import reading

        engine, _ = existing_engine(*_connection_params(ctx))
        with reading(engine) as conn:
            return [n for n in names(conn, incomplete)][:200]
    except Exception:  # noqa: BLE001 - completion must not print tracebacks into a shell
        return []


def complete_experiment(ctx: typer.Context, incomplete: str) -> list[str]:
    def names(conn, prefix):
        from sqlalchemy import select

        from ntklab.db.tables import experiments

        return conn.execute(select(experiments.c.name).where(experiments.c.name.startswith(prefix))
                            .order_by(experiments.c.name)).scalars()

    return _complete(ctx, incomplete, names)


def complete_run(ctx: typer.Context, incomplete: str) -> list[str]:
    def keys(conn, prefix):
        from sqlalchemy import select

        from ntklab.db.tables import runs

        found = conn.execute(select(runs.c.key).where(runs.c.key.startswith(prefix.lower()))
                             .order_by(runs.c.key).limit(200)).scalars()
        return [k[:12] for k in found]

    return _complete(ctx, incomplete, keys)


def experiment_name(value: str) -> str:
    """An experiment named by its name, or by a spec file: the spec's `name:`."""
    path = Path(value)
    if value.endswith((".yaml", ".yml")) or "/" in value:
        if not path.is_file():
            raise UsageError(f"no spec file {value!r} (give a spec file or the name of an experiment)")
        import yaml

        try:
            name = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("name")
        except yaml.YAMLError as error:
            raise UsageError(f"{value}: not valid YAML ({error})") from None
        if not isinstance(name, str):
            raise UsageError(f"{value}: the spec has no `name:`")
        return name
    return value


DbOption = Annotated[Optional[str], typer.Option(
    "--db", metavar="URL", envvar="NTKLAB_DB", show_envvar=True,
    help="database URL, sqlite:///PATH or postgresql://USER@HOST/DB (default: SQLite in the home)")]
HomeOption = Annotated[Optional[Path], typer.Option(
    "--home", metavar="DIR", envvar="NTKLAB_HOME", show_envvar=True,
    help="home directory: SQLite database, artifacts, checkpoints, logs (default: ./.ntklab)")]
DataRootOption = Annotated[Optional[Path], typer.Option(
    "--root", metavar="DIR", envvar="NTKLAB_DATA", show_envvar=True,
    help="data root of the official dataset files (default: ~/.ntklab-data)")]
SetOption = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="override a config key in every run (repeatable)")]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="output format")]
LeaseOption = Annotated[float, typer.Option(
    "--lease-seconds", metavar="SECONDS", callback=finite_between(*LEASE_SECONDS, " of seconds"), help="a run whose worker is silent this long is reclaimed")]
MaxRunsOption = Annotated[int, typer.Option(
    "--max-runs", min=1, max=MAX_COUNT, help="refuse a spec that expands to more runs than this")]
SpecGroupOption = Annotated[Optional[list[str]], typer.Option(
    "--group", "-g", metavar="GROUP", help="only this group of the spec, with the upstream runs it needs (repeatable)")]
SpecArgument = Annotated[Path, typer.Argument(metavar="SPEC", help="experiment spec (YAML)")]
_EXPERIMENT_HELP = "experiment: its name, or its spec file"
ExperimentArgument = Annotated[str, typer.Argument(
    metavar="EXPERIMENT", help=_EXPERIMENT_HELP, autocompletion=complete_experiment)]
OptionalExperimentArgument = Annotated[Optional[str], typer.Argument(
    metavar="EXPERIMENT", help=f"{_EXPERIMENT_HELP} (default: all)", autocompletion=complete_experiment)]
ExperimentOption = Annotated[Optional[str], typer.Option(
    "--experiment", "-e", metavar="EXPERIMENT", help=_EXPERIMENT_HELP, autocompletion=complete_experiment)]
RunArgument = Annotated[str, typer.Argument(
    metavar="RUN", help="run key or a unique prefix of it", autocompletion=complete_run)]
RunsArgument = Annotated[list[str], typer.Argument(
    metavar="RUN", help="run keys or unique prefixes", autocompletion=complete_run)]
OptionalRunsArgument = Annotated[Optional[list[str]], typer.Argument(
    metavar="RUN", help="run keys or unique prefixes", autocompletion=complete_run)]


def reported(command):
    """Turn the errors users can cause into a clear message and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SpecError as error:
            for problem in error.problems:
                err.print(styled("error", "red", problem), highlight=False)
            err.print("nothing was run and the database was not changed", style="dim")
            raise typer.Exit(EXIT_USAGE) from None
        except UsageError as error:
            err.print(styled("error", "red", error), highlight=False)
            raise typer.Exit(EXIT_USAGE) from None
        except DatabaseError as error:
            err.print(styled("database error", "red", error), highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except KeyboardInterrupt:
            raise typer.Exit(SIGNAL_EXIT["SIGINT"]) from None
        except OSError as error:
            where = f" ({error.filename})" if error.filename else ""
            err.print(styled("storage error", "red", redact(f"{error.strerror or error}{where}")), highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None
        except Exception as error:
            if not _is_sqlalchemy_error(error):
                raise
            url = getattr(error, "url", None)
            detail = redact(str(getattr(error, "orig", None) or error).splitlines()[0])
            err.print(styled("database error", "red", detail + (f" ({redact(str(url))})" if url else "")),
                      highlight=False)
            raise typer.Exit(EXIT_DATABASE) from None

    return wrapper


def _is_sqlalchemy_error(error: Exception) -> bool:
    """Checked without importing SQLAlchemy: an error of it means it is loaded already."""
    exc = sys.modules.get("sqlalchemy.exc")
    return exc is not None and isinstance(error, exc.SQLAlchemyError)


def database_url(db: str | None, home_dir: Path | None) -> str:
    """The URL the command uses: --db, else NTKLAB_DB, else the home's SQLite file."""
    from ntklab.db.connection import resolve_url
    from ntklab.store import resolve_home

    return resolve_url(db, resolve_home(home_dir))


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
    """The path of the SQLite file the command would use, if that file does not exist yet. Told
    from the URL's text, without SQLAlchemy, whose import would be a tenth of `ntklab plan`'s time
    for a spec not recorded yet; any other URL is checked when an engine is opened on it."""
    from ntklab.store import default_database_url, resolve_home

    url = db or os.environ.get("NTKLAB_DB") or default_database_url(resolve_home(home_dir))
    scheme, separator, path = url.partition(":///")
    return path if scheme in ("sqlite", "sqlite+pysqlite") and separator and not Path(path).exists() else None


def existing_engine(db: str | None, home_dir: Path | None, *, writable: bool = False):
    """An engine on a database that must already hold results, read-only unless `writable`: a
    command that only reads opens it so, and works on a read-only file system or replica."""
    from ntklab.db.connection import open_engine, resolve_url
    from ntklab.db.schema import check_schema
    from ntklab.store import Home, resolve_home

    missing = sqlite_file_missing(db, home_dir)
    if missing:
        raise DatabaseError(f"no database at {missing}: run a spec first, or pass --db/--home")
    home = Home(resolve_home(home_dir))
    engine = open_engine(resolve_url(db, home.root), read_only=not writable)
    check_schema(engine)
    return engine, home
