"""The benchmarks' profiling helper (bench/profiling.py) on real processes: which pids it finds, what py-spy writes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.profiling import CpuMeter, Profiler, children

# A parent that forks two children, prints their pids and sleeps (idle) while they work in a function of known name.
FORKING = """
import os, select, sys

def spin_in_child():
    while True:
        sum(range(1000))

pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        spin_in_child()
    pids.append(pid)
print(*pids, flush=True)
while True:
    select.select([], [], [], 1.0)
"""


@pytest.fixture
def forking_parent():
    parent = subprocess.Popen([sys.executable, "-c", FORKING], stdout=subprocess.PIPE, text=True)
    forked = sorted(int(pid) for pid in parent.stdout.readline().split())
    yield parent.pid, forked
    for pid in [*forked, parent.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    parent.wait()


def test_children_are_the_processes_a_parent_forked(forking_parent):
    parent, forked = forking_parent

    assert children(parent) == forked
    assert children(forked[0]) == []


def test_profile_of_a_phase_samples_the_children_of_the_named_process(forking_parent, tmp_path):
    parent, forked = forking_parent
    profiler = Profiler(tmp_path, fmt="raw")

    profiler.start("phase", demo=parent)
    time.sleep(1.0)
    written = profiler.stop()

    assert written == [tmp_path / "phase.demo.txt"]
    stacks = written[0].read_text()
    for pid in forked:
        assert f"process {pid}:" in stacks
    assert "spin_in_child" in stacks


def test_without_a_folder_nothing_is_started(forking_parent):
    parent, _ = forking_parent
    profiler = Profiler(None)

    profiler.start("phase", demo=parent)

    assert profiler.recordings == []
    assert profiler.stop() == []


def test_cpu_of_a_process_that_ends_mid_window_still_counts():
    """A worker SIGKILLed during the load: what it used until then is part of the load's cost."""
    spinning = subprocess.Popen([sys.executable, "-c", "while True: sum(range(1000))"])
    meter = CpuMeter(lambda: {"spinning": [spinning.pid]}, every=0.1)
    meter.start()
    time.sleep(0.5)
    spinning.kill()
    spinning.wait()  # reaped: nothing of it is left to read at the end

    used = meter.stop()

    assert used["spinning"] > 0
