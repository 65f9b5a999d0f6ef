"""The `ntklab` command line: parse, call the layers below, print. Nothing else lives here.

One module per family of commands, each registering its commands on `app` (ntklab/cli/common.py)."""

# Imported in the order `ntklab --help` lists the commands; importing a module registers its commands.
from ntklab.cli import runs, worker, jobs, results, watch, compare, reap, cleanup, export, database, data  # noqa: F401,I001
from ntklab.cli.common import app, with_exit_codes


def main() -> None:
    with_exit_codes(app)(prog_name="ntklab")
