"""Real processes for the centralized-logging end-to-end tests.

* :class:`ControllerProcess`: ``conclave logs controller`` on a data directory,
  its JSON log read on a thread (waits are event-driven with deadlines).
* :class:`HostServer`: a ``conclave serve`` deployment whose ``--host`` is not
  127.0.0.1, so two servers on one machine are told apart by their events.
* :func:`search`: the controller's store, read the way ``conclave logs search`` does.
* :func:`wait_for_events`: poll the store until a condition holds, with a deadline.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conclave.config import load_config
from conclave.ops.logstore import open_readonly
from tests.e2e.server import CONCLAVE, ConclaveServer, JsonLog, conclave

START_TIMEOUT = 30.0


@dataclass
class ControllerProcess(JsonLog):
    """``conclave logs controller --dir DATA --listen ADDRESS``."""

    data_dir: Path
    listen: str = "127.0.0.1:0"
    proc: subprocess.Popen[str] | None = None
    port: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)

    def start(self) -> ControllerProcess:
        listen = self.listen if not self.port else f"127.0.0.1:{self.port}"
        self._spawn(
            [*CONCLAVE, "logs", "controller", "--dir", str(self.data_dir), "--listen", listen]
        )
        ready = self.wait_for(lambda e: e.get("event") == "logging controller listening")
        self.port = int(ready["port"])
        return self

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@dataclass
class HostServer(ConclaveServer):
    """A deployment initialised with ``--host`` (its certificate names that host)."""

    host: str = "localhost"

    def init(self) -> HostServer:
        conclave(
            "init", "--domain", self.domain, "--dir", str(self.data_dir), "--host", self.host,
            "--transports", self.transports, "--tls-port", "0", "--sip-port", "0",
        )  # fmt: skip
        if self.config:
            self._patch_config()
        for name, password in self.users.items():
            conclave(
                "user", "add", name, "--dir", str(self.data_dir), "--password-stdin",
                stdin=password + "\n",
            )  # fmt: skip
        return self


def patch(server: ConclaveServer, config: dict[str, dict[str, Any]]) -> None:
    """Change keys of an initialised deployment's conclave.toml."""
    server.config = config
    server._patch_config()


def search(data_dir: Path, **criteria: Any) -> list[dict[str, Any]]:
    """Events in the controller store of ``data_dir`` (empty if it has none yet)."""
    config = load_config(data_dir)
    path = config.path(data_dir, config.logging_controller.store)
    try:
        store = open_readonly(path)
    except FileNotFoundError:
        return []
    try:
        return store.search(**criteria)
    finally:
        store.close()


def wait_for_events(
    data_dir: Path,
    done: Callable[[list[dict[str, Any]]], bool],
    timeout: float = 30.0,
    **criteria: Any,
) -> list[dict[str, Any]]:
    """Poll the store until ``done(events)``; fail with what was found after ``timeout``."""
    deadline = time.monotonic() + timeout
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        events = search(data_dir, **criteria)
        if done(events):
            return events
        time.sleep(0.1)
    raise AssertionError(f"events not stored in {timeout}s; found {events[-10:]}")
