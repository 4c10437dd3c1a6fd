"""The supervisor loop that ``serve --topology`` and ``serve --workers`` share."""

from __future__ import annotations

import os
import signal
import sys
import threading

from conclave.supervisor import Supervisor, Then

WAIT = 20.0

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def failing(code: int) -> list[str]:
    return [sys.executable, "-c", f"raise SystemExit({code})"]


def test_a_child_that_exits_is_restarted_until_the_policy_says_stop() -> None:
    exits: list[tuple[str, int]] = []

    def exited(label: str, _pid: int, status: int, _stopping: bool) -> Then:
        exits.append((label, status))
        return Then.RESTART if len([e for e in exits if e[0] == "flaky"]) < 3 else Then.STOP

    starts: list[str] = []
    with Supervisor[str](started=lambda label, _pid: starts.append(label)) as host:
        host.start("steady", SLEEPER)
        host.start("flaky", failing(3))
        host.run(exited)
    # flaky ran three times; its third exit stopped the host, steady included.
    assert starts.count("flaky") == 3 and starts.count("steady") == 1
    assert [e for e in exits if e[0] == "flaky"] == [("flaky", 3)] * 3
    assert ("steady", -signal.SIGTERM) in exits


def test_a_stop_signal_is_forwarded_and_nothing_restarts() -> None:
    exits: list[tuple[str, int, bool]] = []
    before = signal.getsignal(signal.SIGTERM)

    def exited(label: str, _pid: int, status: int, stopping: bool) -> Then:
        exits.append((label, status, stopping))
        return Then.RESTART

    with Supervisor[str]() as host:
        host.start("a", SLEEPER)
        host.start("b", SLEEPER)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
        timer.start()
        try:
            host.run(exited)
        finally:
            timer.cancel()
    assert sorted(exits) == [("a", -signal.SIGTERM, True), ("b", -signal.SIGTERM, True)]
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
