"""What the benchmarks' processes cost: py-spy flame graphs during a measured phase, CPU seconds per kind of process.

    profiler = Profiler(Path("profiles"))            # Profiler(None) does nothing: the benchmark's default
    profiler.start("proposal-post-16", gunicorn=master_pid)
    ...                                              # the measured phase
    profiler.stop()                                  # writes profiles/proposal-post-16.gunicorn.svg

One ``py-spy record --subprocesses`` per process kind, rooted at the process the stack started (gunicorn's master,
Celery's main process): it samples that process and every child it has or forks, so a worker gunicorn replaces is
still sampled. Each sample's stack starts with the process it came from (``process PID:"command"``), so the graph's
first rows split by process: the gunicorn master sleeps in its arbiter loop and py-spy leaves idle samples out, so
its graph is its workers'; Celery's main process (receiving and acknowledging tasks) stands beside its pool children
(executing them). Stopped with SIGINT, as Ctrl-C stops it, py-spy writes the file.

CpuMeter adds up the CPU time (user + system, from /proc) each kind of process used during a window: divided by the
requests or executions of the window, it is their cost in core-milliseconds, whatever else shares the cores (Linux).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = {"flamegraph": "svg", "speedscope": "speedscope.json", "raw": "txt"}


def children(pid: int) -> list[int]:
    """The direct children of a process, from /proc (Linux): what py-spy's --subprocesses will sample beneath it."""
    found: list[int] = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except OSError:  # the thread ended while we looked
            continue
    return sorted(set(found))


def descendants(pid: int) -> list[int]:
    """The process and every process below it."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += children(current)
    return found


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backends(database: str) -> list[int]:
    """The PostgreSQL server processes serving connections to this database (their title names it), on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if title.startswith("postgres: ") and f" {database} " in title:
                found.append(int(entry.name))
    return found


@dataclass
class CpuMeter:
    """CPU seconds per kind of process between start() and stop(), sampled every `every` seconds in a thread so that a
    process that ends in between (a killed worker) still counts what it used until its last sample.

    `kinds` returns the pids of each kind now (call descendants() in it: a process started later counts from zero).
    """

    kinds: Callable[[], dict[str, list[int]]]
    every: float = 1.0
    first: dict[int, float] = field(default_factory=dict)
    last: dict[tuple[str, int], float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _sample(self, *, baseline: bool = False) -> None:
        for kind, pids in self.kinds().items():
            for pid in pids:
                used = cpu_seconds(pid)
                if used is None:
                    continue
                if baseline:
                    self.first[pid] = used
                self.last[(kind, pid)] = used

    def start(self) -> None:
        self._sample(baseline=True)

        def loop() -> None:
            while not self._stop.wait(self.every):
                self._sample()

        self._thread = threading.Thread(target=loop, name="cpu-meter", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        """Seconds per kind since start()."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        used: dict[str, float] = {}
        for (kind, pid), seconds in self.last.items():
            used[kind] = used.get(kind, 0.0) + seconds - self.first.get(pid, 0.0)
        return used


def py_spy() -> str:
    """The py-spy beside this interpreter (the dev extras install it), else one on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install -e '.[dev]'")
    return found


@dataclass
class _Recording:
    kind: str
    pid: int
    output: Path
    popen: subprocess.Popen
    log: Path


class Profiler:
    """Starts py-spy on the named processes at the start of a phase and writes their flame graphs at its end."""

    def __init__(self, folder: Path | None, *, fmt: str = "flamegraph", rate: int = 100) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        self.folder, self.fmt, self.rate = folder, fmt, rate
        self.recordings: list[_Recording] = []
        self.written: list[Path] = []
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            self.binary = py_spy()

    def start(self, phase: str, **processes: int) -> None:
        """Sample each process tree (kind=root pid) until stop(); returns once every py-spy is sampling."""
        if self.folder is None:
            return
        if self.recordings:
            raise RuntimeError("stop() the phase being profiled first")
        for kind, pid in processes.items():
            output = self.folder / f"{phase}.{kind}.{FORMATS[self.fmt]}"
            log = self.folder / f"{phase}.{kind}.log"
            argv = [self.binary, "record", "--pid", str(pid), "--subprocesses", "--rate", str(self.rate)]
            argv += ["--format", self.fmt, "--output", str(output)]
            with log.open("w") as out:
                popen = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            self.recordings.append(_Recording(kind, pid, output, popen, log))
        deadline = time.monotonic() + 10
        for recording in self.recordings:
            while "Sampling process" not in recording.log.read_text(errors="replace"):
                if recording.popen.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"py-spy did not start on {recording.kind}:\n{recording.log.read_text()}")
                time.sleep(0.05)
        pids = "; ".join(f"{r.kind} {r.pid} + children {children(r.pid)}" for r in self.recordings)
        print(f"  [profiling {phase}: {pids}]", flush=True)

    def stop(self) -> list[Path]:
        """Stop sampling (SIGINT, as Ctrl-C) and wait for the files; returns those written in this phase."""
        written: list[Path] = []
        for recording in self.recordings:
            if recording.popen.poll() is None:
                os.kill(recording.popen.pid, signal.SIGINT)
        for recording in self.recordings:
            try:
                recording.popen.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recording.popen.kill()
                recording.popen.wait()
            if recording.output.exists():
                written.append(recording.output)
            else:
                print(f"  [no profile of {recording.kind}: {recording.log.read_text()[-500:]}]", file=sys.stderr)
        self.recordings = []
        self.written += written
        return written
