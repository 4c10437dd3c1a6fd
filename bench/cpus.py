"""Which cores the server under test gets, and which the load generators get.

On this 2-core machine sipp (client and answering UAS), stunnel and the bench
itself share the cores with the server. Unpinned, the scheduler lets them take
turns on both, and at high rates the load generators take a good part of the
server's core: at three times the sustained MESSAGE rate sipp needs about a
core of its own. Pinned, each server under test runs on :data:`SERVER_CORE`
alone (Conclave's one process, every Kamailio process) and everything else on
the remaining cores, so both servers get the same, whole core. With a single
core nothing is pinned.
"""

from __future__ import annotations

import os
import shutil

SERVER_CORE = 0
"""The core the server under test runs on."""


_pinned = False


def pin_load_generators() -> bool:
    """Move this process (and so every child it starts later) off the server's core.

    Returns whether it did: it needs two cores or more and ``taskset``."""
    global _pinned
    cores = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
    if len(cores) < 2 or SERVER_CORE not in cores or shutil.which("taskset") is None:
        return False
    os.sched_setaffinity(0, cores - {SERVER_CORE})
    _pinned = True
    return True


def server_prefix(*, pin: bool = True) -> list[str]:
    """The argv prefix that starts a server on :data:`SERVER_CORE` (its children
    inherit it); empty when the load generators were not moved off it, or with
    ``pin=False`` (a server of several processes may use every core: scenario 6)."""
    return ["taskset", "-c", str(SERVER_CORE)] if _pinned and pin else []
