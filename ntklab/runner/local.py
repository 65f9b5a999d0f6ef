"""The local executor: N `ntklab worker` processes on this machine, optionally one per accelerator.

Workers are fresh processes (never forks of one that imported JAX), each in a session of its own
so that a Ctrl-C reaches them once, forwarded by this process: the first signal asks each to
checkpoint and stop, a second SIGINT aborts them. A worker pinned to a device sees only it
(CUDA_VISIBLE_DEVICES), so JAX's default preallocation is safe; workers that share a device
allocate on demand instead. Each worker writes its progress to a log file in the home.

Several workers split this process's CPUs between them (NTKLAB_CPUS, applied by the worker
before JAX starts): XLA's CPU client and BLAS size their thread pools from the CPUs a process
may run on, so two workers on two cores would otherwise run two threads each, and each block of
a kernel they fill together would wait for a core the other holds (bench/kernel_blocks.py).
"""

import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

WORKER_LOGS = "workers"
CPUS_VARIABLE = "NTKLAB_CPUS"


def cpu_sets(workers: int, cpus: Sequence[int]) -> list[list[int]]:
    """The CPUs of each of `workers` workers: disjoint shares of `cpus` when there are enough,
    else one CPU each in turn."""
    cpus = sorted(cpus)
    if workers >= len(cpus):
        return [[cpus[i % len(cpus)]] for i in range(workers)]
    share = len(cpus) // workers
    return [cpus[i * share : (i + 1) * share] for i in range(workers)]


def apply_cpu_set() -> None:
    """Restrict this process to the CPUs its executor gave it (NTKLAB_CPUS), if any; call it
    before JAX's first computation."""
    cpus = os.environ.get(CPUS_VARIABLE)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def worker_environment(base: dict[str, str], *, db_url: str, home: Path, device: str | None,
                       shared_device: bool, cpus: Sequence[int] = ()) -> dict[str, str]:
    """The environment of one worker: the database and home (never on a command line, where `ps`
    shows a password), the device and the CPUs it may use."""
    env = dict(base, NTKLAB_DB=db_url, NTKLAB_HOME=str(home))
    if cpus:
        env[CPUS_VARIABLE] = ",".join(map(str, cpus))
    if device is not None:
        env["CUDA_VISIBLE_DEVICES"] = device
    if shared_device:
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    return env


@dataclass(frozen=True)
class LocalWorker:
    index: int
    process: subprocess.Popen
    log: Path


def start_workers(worker_args: Sequence[str], workers: int, devices: Sequence[str] | None, *, db_url: str,
                  home: Path, label: str) -> list[LocalWorker]:
    """Start `workers` processes running `ntklab worker ARGS...`; worker i uses devices[i % len]."""
    log_dir = home / WORKER_LOGS
    log_dir.mkdir(parents=True, exist_ok=True)
    started = []
    shared = bool(devices) and workers > len(devices)
    available = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    cpus = cpu_sets(workers, available) if available and workers > 1 else [[]] * workers
    for index in range(workers):
        device = devices[index % len(devices)] if devices else None
        log = log_dir / f"{label}-{index}.log"
        env = worker_environment(os.environ, db_url=db_url, home=home, device=device, shared_device=shared,
                                 cpus=cpus[index])
        with log.open("ab") as handle:
            process = subprocess.Popen([sys.executable, "-m", "ntklab", "worker", *worker_args], env=env,
                                       stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        started.append(LocalWorker(index, process, log))
    return started


def wait_for_workers(workers: Sequence[LocalWorker]) -> tuple[list[int], str | None]:
    """Wait until every worker has exited, forwarding SIGINT and SIGTERM to them. Returns their
    exit codes and the name of the first signal received, if any."""
    received: list[str] = []

    def forward(signum, _frame) -> None:
        received.append(signal.Signals(signum).name)
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [worker.process.wait() for worker in workers]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return codes, received[0] if received else None
