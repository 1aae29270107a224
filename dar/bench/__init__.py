"""Benchmarks behind ``make bench``: one module per part, each exposing ``bench(quick) -> list[dict]``.

Shared timing helpers: :func:`median_seconds` (one callable) and :func:`alternate` (several callables timed in
turn, the order flipping every repeat, so drifts of a shared machine's speed hit them alike). Both record wall
time; :func:`alternate` also records the process CPU time, which a loaded machine perturbs far less (with one
torch thread it is the compute time the call got).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn`` (the caller does any warm-up)."""
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


@dataclass
class Timings:
    """Wall and CPU seconds of every repeat of one callable of :func:`alternate`."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)


def alternate(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timings]:
    """Time each callable ``repeats`` times, in turn; the order flips every repeat (the caller warms up)."""
    names = list(fns)
    timings = {name: Timings() for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            tick, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            timings[name].wall.append(time.perf_counter() - tick)
            timings[name].cpu.append(time.process_time() - cpu)
    return timings


def ratio_of_pairs(slow: Timings, fast: Timings, cpu: bool = False) -> float:
    """Median over repeats of slow / fast, each repeat's pair taken from the same round of :func:`alternate`."""
    a, b = (slow.cpu, fast.cpu) if cpu else (slow.wall, fast.wall)
    return statistics.median(x / y for x, y in zip(a, b))


SKIPPED: list[str] = []
"""What this run left out and why, in order (``python -m dar.bench`` prints it after the table)."""


def skip(part: str, what: str) -> None:
    """Record (and log) that ``part`` skipped ``what`` (a phrase that says why)."""
    import logging

    SKIPPED.append(f"{part}: {what}")
    logging.getLogger("dar.bench").info("%s: SKIPPED %s", part, what)
