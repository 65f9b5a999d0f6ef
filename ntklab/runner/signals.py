"""SIGINT/SIGTERM (and any other signals a worker is given, such as Slurm's pre-timeout
SIGUSR2): the first asks the current task to checkpoint and stop; a second SIGINT aborts at once,
and signals after it are ignored, so recording the aborted run cannot itself be interrupted."""

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ntklab.runner.context import StopFlag


@contextmanager
def stop_on_signals(stop: StopFlag, extra: Sequence[signal.Signals] = ()) -> Iterator[None]:
    aborted = False

    def on_signal(signum, _frame) -> None:
        nonlocal aborted
        if aborted:
            return
        if stop.is_set() and signum == signal.SIGINT:
            aborted = True
            raise KeyboardInterrupt
        stop.set(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, *extra)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
