"""The `ntklab` command line: parse, call the layers below, print. Nothing else lives here.

One module per family of commands, each registering its commands on `app` (ntklab/cli/common.py)."""

import signal

# Imported in the order `ntklab --help` lists the commands; importing a module registers its commands.
from ntklab.cli import runs, worker, jobs, results, watch, compare, reap, cleanup, export, database, data  # noqa: F401,I001
from ntklab.cli.common import SIGNAL_EXIT, app, with_exit_codes
from ntklab.cli.conversion import plain_values


def main() -> None:
    try:
        plain_values()
        with_exit_codes(app)(prog_name="ntklab")
    except KeyboardInterrupt:  # a Ctrl-C outside any command's own handling
        raise SystemExit(SIGNAL_EXIT["SIGINT"]) from None
    finally:
        # The command is over: a late Ctrl-C (the second of two in quick succession) must not turn
        # its exit status into a death by signal while the interpreter shuts down.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
