"""Child processes of one host, supervised: ``serve --topology`` (one per role) and
``serve --workers N`` (one per worker) share this loop and differ only in what an
exit means (stop the host, or start the child again).

Stop signals (SIGTERM, SIGINT) are forwarded to every child and end the host
once the children have exited; other forwarded signals (SIGHUP: reload) only
pass through. The loop reaps children with ``os.wait`` until none is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from enum import Enum
from types import FrameType
from typing import Generic, TypeVar

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

L = TypeVar("L")


class Then(Enum):
    """What the supervisor does after a child exits on its own."""

    RESTART = "restart"
    STOP = "stop"
    """Stop every other child, then return."""


class Supervisor(Generic[L]):
    """Children labelled ``L`` (a role name, a worker index)."""

    def __init__(
        self,
        *,
        started: Callable[[L, int], None] = lambda _label, _pid: None,
        forwarded: Sequence[signal.Signals] = STOP_SIGNALS,
    ) -> None:
        self.children: dict[int, tuple[L, list[str]]] = {}
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self._started = started
        self._forwarded = tuple(forwarded)
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Supervisor[L]:
        """Forward signals from now on (before the first child starts)."""
        self._previous = {s: signal.signal(s, self._forward) for s in self._forwarded}
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]

    def start(self, label: L, command: Sequence[str]) -> int:
        """Start ``command`` as the child ``label``; returns its pid."""
        proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL)
        self.children[proc.pid] = (label, list(command))
        self._procs[proc.pid] = proc
        self._started(label, proc.pid)
        return proc.pid

    def stop_all(self) -> None:
        """SIGTERM to every child still running; the loop returns once they exit."""
        self.stopping = True
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, signum: int) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    def _forward(self, signum: int, _frame: FrameType | None) -> None:
        if signum in STOP_SIGNALS:
            self.stopping = True
        self._signal_all(signum)

    def run(self, exited: Callable[[L, int, int, bool], Then]) -> None:
        """Reap children until none is left. ``exited(label, pid, status, stopping)``
        says what a child's exit means; while stopping, its answer is ignored."""
        while self.children:
            pid, raw = os.wait()
            if pid not in self.children:
                continue
            label, command = self.children.pop(pid)
            del self._procs[pid]
            then = exited(label, pid, os.waitstatus_to_exitcode(raw), self.stopping)
            if self.stopping:
                continue
            if then is Then.RESTART:
                self.start(label, command)
            else:
                self.stop_all()
