"""Latency of the database-only commands, end to end in a fresh process, against `python -c pass`.

    python bench/cli.py [--home DIR] [--repeats 7]

Without --home, the quickstart is run once into a temporary home first (about a minute on 2 cores).
Each command runs `repeats` times as `python -m ntklab ...`, the cases taking turns so that a change
of the machine's load falls on all of them alike; the table gives the best and median wall time,
the best CPU time (user + system, which another process's load inflates less than wall time), the
ratio of the best wall time to the floor (`python -c pass`) and whether it is within the 0.3 s
target. The peers are what no command can go below: importing SQLAlchemy (every command that reads
the database), Typer with rich's table (every command that prints one), both, and JAX (what any
command that loaded it would pay). Each case runs once before it is timed, with bytecode caching on:
a PYTHONDONTWRITEBYTECODE of the calling environment is dropped, since it makes every start compile
ntklab's own modules again, as no installed copy does. Run by hand, not by CI; the machine's load
average is printed with the table.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 0.3


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of one run of `argv`."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {process.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home that holds the quickstart (default: run it into a temporary one)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NTKLAB_") and k != "PYTHONDONTWRITEBYTECODE"}
        env |= {"NTKLAB_HOME": str(home)}
        ntklab = [sys.executable, "-m", "ntklab"]
        if args.home is None:
            print("running the quickstart into a temporary home ...", file=sys.stderr)
            subprocess.run([*ntklab, "run", str(REPO / "specs" / "quickstart.yaml")], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        listed = subprocess.run([*ntklab, "query", "-e", "quickstart", "-c", "key", "-f", "json"], env=env,
                                check=True, capture_output=True, text=True).stdout
        first, second = (r["key"][:12] for r in json.loads(listed)[:2])
        python = [sys.executable, "-c"]
        cases = [
            ("python -c pass (floor)", [*python, "pass"]),
            ("import sqlalchemy (peer)", [*python, "import sqlalchemy"]),
            ("import typer, rich.table (peer)", [*python, "import typer, rich.console, rich.table"]),
            ("import all three (peer)", [*python, "import sqlalchemy, typer, rich.console, rich.table"]),
            ("import jax (peer)", [*python, "import jax"]),
            ("ntklab --version", [*ntklab, "--version"]),
            ("ntklab status", [*ntklab, "status"]),
            ("ntklab query -e quickstart", [*ntklab, "query", "-e", "quickstart"]),
            ("ntklab show RUN", [*ntklab, "show", first]),
            ("ntklab logs RUN", [*ntklab, "logs", first]),
            ("ntklab compare RUN RUN", [*ntklab, "compare", first, second]),
        ]
        for _, argv in cases:
            timed(argv, env)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in cases}
        for _ in range(args.repeats):
            for name, argv in cases:
                times[name].append(timed(argv, env))
    floor = min(wall for wall, _ in times[cases[0][0]])
    print(f"{'command':34} {'best s':>7} {'median s':>9} {'cpu s':>6} {'x floor':>8}  within {TARGET_SECONDS} s")
    for name, runs in times.items():
        walls = [wall for wall, _ in runs]
        best = min(walls)
        within = "-" if not name.startswith("ntklab") else ("yes" if best <= TARGET_SECONDS else "no")
        print(f"{name:34} {best:7.3f} {statistics.median(walls):9.3f} {min(cpu for _, cpu in runs):6.3f} "
              f"{best / floor:8.1f}  {within}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
