"""CPU time and memory of server processes, read from /proc.

A server is a set of pids (Conclave: one; Kamailio: the main process and
the workers it forked). CPU is utime + stime from ``/proc/PID/stat``;
memory is the peak of a sampled total: VmHWM for one process, and for a
multi-process server the sum of PSS (shared pages divided among the
processes that map them, so Kamailio's shared memory is counted once).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SAMPLE_INTERVAL = 0.25
"""Seconds between memory samples: enough to see a peak that lasts a step."""


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process in seconds (0.0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    # Field 2 (comm) may contain spaces: split after its closing parenthesis.
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of /proc/PID/status (VmHWM, VmRSS...), 0 if absent."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kib(pid: int) -> int:
    """Proportional set size of one process (shared pages split among sharers)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (scans /proc: the kernel may lack task/*/children)."""
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += children(current)
    return out


@dataclass
class Usage:
    """CPU seconds and peak memory over one measured interval."""

    cpu_seconds: float
    peak_kib: int


class Meter:
    """Measures a server (a callable giving its pids) between start() and stop().

    Memory is sampled on a thread every :data:`SAMPLE_INTERVAL`; for a single
    process VmHWM (the kernel's own peak) is used as well, so short peaks
    between samples are not missed.
    """

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self._pids = pids
        self._start_cpu: dict[int, float] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def total_cpu(self) -> float:
        return sum(self._cpu_by_pid().values())

    def _cpu_by_pid(self) -> dict[int, float]:
        return {p: cpu_seconds(p) for p in self._pids()}

    def memory_kib(self) -> int:
        pids = self._pids()
        if len(pids) == 1:
            return status_kib(pids[0], "VmHWM")
        return sum(pss_kib(p) for p in pids)

    def start(self) -> None:
        self._start_cpu = self._cpu_by_pid()
        self._peak = self.memory_kib()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._peak = max(self._peak, self.memory_kib())

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._peak = max(self._peak, self.memory_kib())
        # Per process: one that exited during the step (a Kamailio worker that
        # died under overload) is left out rather than counted as negative time.
        now = self._cpu_by_pid()
        used = sum(max(0.0, cpu - self._start_cpu.get(pid, 0.0)) for pid, cpu in now.items())
        return Usage(used, self._peak)
