"""A second Ctrl-C lands where it cannot break a lock (ntklab/interrupts.py): not inside the first
one's handling, not inside a database transaction. Real signals, sent to the main thread itself
(Python runs the handler right after the call that sent it)."""

import signal
import subprocess
import sys
import threading
import textwrap

import pytest
from sqlalchemy import text

from ntklab.db.connection import HeldConnection, open_engine, reading, writing
from ntklab.runner.context import StopFlag
from ntklab.runner.signals import stop_on_signals


def ctrl_c() -> None:
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def test_a_second_interrupt_inside_the_first_ones_handling_aborts_without_deadlock():
    # The stop flag's Event is given a set() that receives the second SIGINT while it holds the
    # Event's lock, where it arrived in a CI run (a handler that set the flag again waited for
    # itself forever). In a subprocess, so that a deadlock fails the test instead of hanging it.
    script = textwrap.dedent("""
        import signal, threading
        from ntklab.runner.context import StopFlag
        from ntklab.runner.signals import stop_on_signals

        class SecondCtrlCWhileSetting(threading.Event):
            def set(self):
                with self._cond:
                    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                    self._flag = True
                    self._cond.notify_all()

        stop = StopFlag()
        stop._event = SecondCtrlCWhileSetting()
        with stop_on_signals(stop):
            try:
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                print("not aborted")
            except KeyboardInterrupt:
                free = stop._event._cond.acquire(timeout=5)
                print("aborted", stop.is_set(), stop.signal_name, "lock free" if free else "lock held")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["aborted", "True", "SIGINT", "lock", "free"], done.stdout


@pytest.mark.parametrize("through", ["writing", "held"])
def test_a_second_interrupt_inside_a_transaction_lands_after_it(db_url, through):
    engine = open_engine(db_url)
    with writing(engine) as conn:
        conn.execute(text("create table t (x integer)"))
    stop = StopFlag()
    with stop_on_signals(stop), HeldConnection(engine) as held:
        ctrl_c()
        assert stop.is_set()
        with pytest.raises(KeyboardInterrupt):
            with (writing(engine) if through == "writing" else held.statement()) as conn:
                conn.execute(text("insert into t values (1)"))
                ctrl_c()
                conn.execute(text("insert into t values (2)"))
        again = ctrl_c()  # a third: ignored
    assert again is None
    recorded = []
    other = threading.Thread(target=lambda: recorded.extend(_insert_and_read(engine)))
    other.start()
    other.join(timeout=30)
    assert not other.is_alive(), "the pool or the database stayed locked"
    assert recorded == [1, 2, 3]
    engine.dispose()


def _insert_and_read(engine) -> list[int]:
    with writing(engine) as conn:
        conn.execute(text("insert into t values (3)"))
    with reading(engine) as conn:
        return list(conn.execute(text("select x from t order by x")).scalars())


def test_outside_a_transaction_the_second_interrupt_aborts_at_once():
    stop = StopFlag()
    reached = []
    with stop_on_signals(stop):
        ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            ctrl_c()
            reached.append("after the second")
    assert reached == []
