"""Where a command's start-up goes: named phases between the process start and the first training step.

At a million training items the minutes before step 1 are the user's first impression of the tool (and every job
of a sweep and every DDP rank pays them again). Each phase is logged when it ends (``startup: guard 3.21 s``) and
summed here, so the job record and ``benchmarks/data_scale.py`` can say which phase grew. The record is per process
(a DDP rank's own), kept in this module like a logger's state, and restarted by :func:`begin_job` for each job (a
Hydra multirun with the basic launcher runs its jobs one after another in one process).
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

log = logging.getLogger("hybrid_retrieval.startup")

_phases: dict[str, float] = {}  # phase name -> seconds, in the order the phases first ran
_origin: list[float] = []  # perf_counter() at the current job's start (empty: the process start)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a start-up phase (a phase entered twice is summed: e.g. a sampler built for the schedule and the loader)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        _phases[name] = _phases.get(name, 0.0) + seconds
        log.info("startup: %s %.2f s", name, seconds)


def begin_job() -> None:
    """A job starts (called when the command's own code runs): forget the previous job's phases. The first job of a
    process counts from the process start, with the interpreter, imports and config composition as its first phase;
    a later job of the same process (in-process multirun) counts from here."""
    first = not _origin
    _phases.clear()
    _origin[:] = [time.perf_counter() - (seconds_since_process_start() if first else 0.0)]
    if first:
        _phases["imports and config"] = time.perf_counter() - _origin[0]


def seconds_since_job_start() -> float:
    """Seconds since :func:`begin_job` set the clock (the process start if it never ran)."""
    return time.perf_counter() - _origin[0] if _origin else seconds_since_process_start()


def startup_phases() -> dict[str, float]:
    """``{phase: seconds}`` so far in this process, rounded to 10 ms."""
    return {name: round(seconds, 2) for name, seconds in _phases.items()}


def seconds_since_process_start() -> float:
    """Wall seconds since this process started (interpreter start-up and imports included). On Linux from the
    process's start in clock ticks since boot (10 ms); psutil's ``create_time`` adds the boot time, which the kernel
    gives in whole seconds, so it can be off by up to a second."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        return time.time() - psutil.Process().create_time()


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


#: The line the training core logs when the first training step starts; ``benchmarks/data_scale.py`` waits for it.
FIRST_STEP_MARKER = "first training step starts"


def first_step_record() -> dict:
    """The job record's ``startup``: seconds from the job's start (:func:`begin_job`) to the first training step, the
    phases in between, and the process's peak RSS then (before training allocates activations and optimiser state)."""
    return {
        "to_first_step_s": round(seconds_since_job_start(), 1),
        "phases_s": startup_phases(),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
