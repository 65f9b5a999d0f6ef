"""Where a KeyboardInterrupt from a signal handler may land, and where it waits.

Python runs a signal's handler in the main thread between two bytecodes, wherever that thread is,
and a KeyboardInterrupt raised there can break code that holds a lock: `threading.Condition`'s
`__enter__` is Python code that takes its lock and then returns, and an exception raised between
the two leaves the lock taken with no `with` to release it. SQLAlchemy's connection pool hands out
connections under such conditions, and an interrupted checkout leaves the pool locked: the next
statement, the one recording the run as interrupted, waits forever. So is a signal handler that
runs inside another one's `Event.set()`. Inside `deferred_interrupts` (every database transaction,
ntklab/db/connection.py) `interrupt()` only notes the interrupt, and the block raises it as it
ends, milliseconds later."""

import threading


class _DeferredInterrupts(threading.local):
    """Re-entrant; per thread, although only the main thread runs signal handlers."""

    depth = 0
    pending = False

    def __enter__(self) -> None:
        self.depth += 1

    def __exit__(self, *exc) -> None:
        self.depth -= 1
        if self.pending and not self.depth:
            self.pending = False
            raise KeyboardInterrupt


deferred_interrupts = _DeferredInterrupts()


def interrupt() -> None:
    """Raise KeyboardInterrupt (from a signal handler): now, or as the deferring block ends."""
    if deferred_interrupts.depth:
        deferred_interrupts.pending = True
        return
    raise KeyboardInterrupt
