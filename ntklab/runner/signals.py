"""SIGINT/SIGTERM (and any other signals a worker is given, such as Slurm's pre-timeout
SIGUSR2): the first asks the current task to checkpoint and stop; a second SIGINT aborts at once
(after the database transaction in flight, ntklab/interrupts.py), and signals after it are
ignored, so recording the aborted run cannot itself be interrupted."""

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ntklab.interrupts import deferred_interrupts, interrupt
from ntklab.runner.context import StopFlag


@contextmanager
def stop_on_signals(stop: StopFlag, extra: Sequence[signal.Signals] = ()) -> Iterator[None]:
    aborted = False
    stopping = False  # the first signal's handler is setting the flag: a second one can run inside it

    def on_signal(signum, _frame) -> None:
        nonlocal aborted, stopping
        if aborted:
            return
        if stopping or stop.is_set():
            if signum == signal.SIGINT:
                aborted = True
                interrupt()
            return
        stopping = True
        try:
            # The flag's Event.set() takes a lock: a handler run inside it must neither take that
            # lock again (it would wait for itself) nor raise while it is held.
            with deferred_interrupts:
                stop.set(signal.Signals(signum).name)
        finally:
            stopping = False

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, *extra)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
