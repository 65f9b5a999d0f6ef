"""Latency of the database-only commands, end to end in a fresh process, against `python -c pass`.

    python bench/cli.py [--home DIR] [--repeats 7]

Without --home, the quickstart is run once into a temporary home first (about a minute on 2 cores).
Each command runs `repeats` times as `python -m ntklab ...`; the table gives the best and median
wall time, the ratio of the best to the floor (`python -c pass`) and whether it is within the
0.3 s target. `python -c "import jax"` is a peer: what any command that loaded JAX would pay.
Run by hand, not by CI; the machine's load average is printed with the table.
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


def wall(argv: list[str], env: dict[str, str], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, help="a home that holds the quickstart (default: run it into a temporary one)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or Path(scratch) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("NTKLAB_")} | {"NTKLAB_HOME": str(home)}
        ntklab = [sys.executable, "-m", "ntklab"]
        if args.home is None:
            print("running the quickstart into a temporary home ...", file=sys.stderr)
            subprocess.run([*ntklab, "run", str(REPO / "specs" / "quickstart.yaml")], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        listed = subprocess.run([*ntklab, "query", "-e", "quickstart", "-c", "key", "-f", "json"], env=env,
                                check=True, capture_output=True, text=True).stdout
        first, second = (r["key"][:12] for r in json.loads(listed)[:2])
        cases = [
            ("python -c pass (floor)", [sys.executable, "-c", "pass"]),
            ("python -c 'import jax' (peer)", [sys.executable, "-c", "import jax"]),
            ("ntklab --version", [*ntklab, "--version"]),
            ("ntklab status", [*ntklab, "status"]),
            ("ntklab query -e quickstart", [*ntklab, "query", "-e", "quickstart"]),
            ("ntklab show RUN", [*ntklab, "show", first]),
            ("ntklab logs RUN", [*ntklab, "logs", first]),
            ("ntklab compare RUN RUN", [*ntklab, "compare", first, second]),
        ]
        rows = [(name, wall(argv, env, args.repeats)) for name, argv in cases]
    floor = min(rows[0][1])
    print(f"{'command':32} {'best s':>7} {'median s':>9} {'x floor':>8}  within {TARGET_SECONDS} s")
    for name, times in rows:
        best = min(times)
        within = "-" if not name.startswith("ntklab") else ("yes" if best <= TARGET_SECONDS else "no")
        print(f"{name:32} {best:7.3f} {statistics.median(times):9.3f} {best / floor:8.1f}  {within}")
    print(f"load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
