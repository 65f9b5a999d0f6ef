"""SIGINT/SIGTERM (and any other signals a worker is given, such as Slurm's pre-timeout
SIGUSR2): the first asks the current task to checkpoint and stop; a second SIGINT aborts at once."""

import signal
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ntklab.runner.context import StopFlag


@contextmanager
def stop_on_signals(stop: StopFlag, extra: Sequence[signal.Signals] = ()) -> Iterator[None]:
    def on_signal(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set(name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, *extra)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
