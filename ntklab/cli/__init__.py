"""The `ntklab` command line: parse, call the layers below, print. Nothing else lives here.

One module per family of commands, each registering its commands on `app` (ntklab/cli/common.py)."""

import signal

# Imported in the order `ntklab --help` lists the commands; importing a module registers its commands.
from ntklab.cli import runs, worker, jobs, results, watch, compare, reap, cleanup, export, database, data  # noqa: F401,I001
from ntklab.cli.common import SIGNAL_EXIT, app, with_exit_codes
from ntklab.cli.conversion import plain_values
from ntklab.interrupts import interrupt


class _Interrupts:
    """SIGINT raises KeyboardInterrupt (after the database transaction in flight,
    ntklab/interrupts.py) until the command is over, then does nothing.

    A second Ctrl-C in quick succession can land anywhere in the command's shutdown. Python runs a
    signal's handler at its next function call, so restoring SIG_IGN at the end cannot close the gap
    alone: the call that would restore it is where the pending KeyboardInterrupt is raised, outside
    every handler, and the interpreter then kills itself with SIGINT (exit -2, not 130). Setting
    `over` is an attribute store, which runs no handler."""

    over = False

    def __call__(self, _signum, _frame) -> None:
        if not self.over:
            interrupt()


def main() -> None:
    interrupts = _Interrupts()
    signal.signal(signal.SIGINT, interrupts)
    try:
        try:
            plain_values()
            with_exit_codes(app)(prog_name="ntklab")
        except KeyboardInterrupt:  # a Ctrl-C outside any command's own handling
            interrupts.over = True
            raise SystemExit(SIGNAL_EXIT["SIGINT"]) from None
    finally:
        interrupts.over = True
        # The interpreter's shutdown resets Python-level handlers to the default, which would let a
        # late Ctrl-C kill the process; an ignored signal stays ignored.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
