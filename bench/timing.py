"""Timing shared by the benchmarks: a first call (compilation included), then the best of repeats."""

import time


def _seconds(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(seconds of the first call, minimum seconds over `repeats` further calls, the last result)."""
    first, result = _seconds(fn)
    times = []
    for _ in range(repeats):
        seconds, result = _seconds(fn)
        times.append(seconds)
    return first, min(times), result


def timed_in_turn(fns: dict, repeats: int) -> dict[str, tuple[float, float, object]]:
    """`timed` for several functions compared with each other: after every first call, `repeats`
    rounds time each function once, in turn (the order reversed every other round), so a slow
    spell of a shared machine or the state an earlier function left behind does not fall on one
    function only. Per name: (first call, minimum, last result)."""
    first, results, times = {}, {}, {name: [] for name in fns}
    for name, fn in fns.items():
        first[name], results[name] = _seconds(fn)
    names = list(fns)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            seconds, results[name] = _seconds(fns[name])
            times[name].append(seconds)
    return {name: (first[name], min(times[name]), results[name]) for name in fns}
