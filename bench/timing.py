"""Timing shared by the benchmarks: a first call (compilation included), then the best of repeats."""

import time


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(seconds of the first call, minimum seconds over `repeats` further calls, the last result)."""
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return first, min(times), result
