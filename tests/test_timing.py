"""The start-up record (common/timing.py): phases add up, each job of a process starts its own clock."""

from __future__ import annotations

import time

from hybrid_retrieval.common import timing


def test_phases_sum_within_the_job_and_a_second_job_starts_afresh(monkeypatch):
    monkeypatch.setattr(timing, "_phases", {})
    monkeypatch.setattr(timing, "_origin", [])
    timing.begin_job()  # the process's first job: counted from the process start
    first = timing.startup_phases()
    assert list(first) == ["imports and config"] and first["imports and config"] > 0
    with timing.phase("sampler"):
        time.sleep(0.05)
    with timing.phase("sampler"):  # entered twice: summed
        time.sleep(0.05)
    record = timing.first_step_record()
    assert record["phases_s"]["sampler"] >= 0.1
    assert record["to_first_step_s"] >= round(sum(record["phases_s"].values()), 1) - 0.05
    assert record["to_first_step_s"] <= timing.seconds_since_process_start() + 0.05 and record["peak_rss_mb"] > 10

    timing.begin_job()  # a later job of the same process (in-process multirun): its own clock, no import phase
    assert timing.startup_phases() == {} and timing.seconds_since_job_start() < 0.05
    with timing.phase("model load"):
        time.sleep(0.02)
    assert list(timing.first_step_record()["phases_s"]) == ["model load"]


def test_the_process_clock_counts_from_the_process_start():
    """/proc/self/stat's start time in ticks (10 ms) agrees with psutil's create_time (whole-second boot time)."""
    import psutil

    ours = timing.seconds_since_process_start()
    theirs = time.time() - psutil.Process().create_time()
    assert ours > 0 and abs(ours - theirs) < 1.1
