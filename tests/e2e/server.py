"""Run a real `conclave serve` process for end-to-end tests.

Each :class:`ConclaveServer` gets its own data directory (made with the real
``conclave init`` and ``conclave user add``), binds ephemeral ports on
127.0.0.1, and is started as a subprocess. Readiness and every other wait
is event-driven: the server's JSON log lines are read on a thread and
tests wait for the line they need, with a deadline.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONCLAVE = [sys.executable, "-m", "conclave"]
_TEMPLATES: dict[tuple[str, str, tuple[tuple[str, str], ...]], Path] = {}


@atexit.register
def _remove_templates() -> None:
    for template in _TEMPLATES.values():
        shutil.rmtree(template.parent, ignore_errors=True)


START_TIMEOUT = 30.0


def conclave(
    *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*CONCLAVE, *args], input=stdin, capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"conclave {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


class JsonLog:
    """A subprocess whose JSON log lines on stderr are read on a thread.

    Subclasses hold ``proc``, ``lines`` and ``_queue``; :meth:`_spawn` starts
    the process, and every wait is :meth:`wait_for` with a deadline.
    """

    proc: subprocess.Popen[str] | None
    lines: list[dict[str, Any]]
    _queue: queue.Queue[dict[str, Any] | None]
    _reader: threading.Thread | None

    def _spawn(self, argv: list[str]) -> None:
        """Start ``argv``; the log seen so far is forgotten."""
        self.lines = []
        self._queue = queue.Queue()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                event = {"event": "non-json output", "text": raw.rstrip()}
            self._queue.put(event)
        self._queue.put(None)

    def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = START_TIMEOUT
    ) -> dict[str, Any]:
        """The first log event (past or future) that ``match`` accepts."""
        for event in self.lines:
            if match(event):
                return event
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"log event not seen in {timeout}s; last: {self.lines[-5:]}")
            try:
                event = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(f"process exited; last log lines: {self.lines[-10:]}")
            self.lines.append(event)
            if match(event):
                return event


@dataclass
class ConclaveServer(JsonLog):
    """A deployment in ``data_dir`` and, once started, its server process."""

    data_dir: Path
    domain: str = "localhost"
    transports: str = "tls"
    users: dict[str, str] = field(default_factory=dict)
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)
    _queue: queue.Queue[dict[str, Any] | None] = field(default_factory=queue.Queue)
    _reader: threading.Thread | None = None

    # -- set-up --------------------------------------------------------------------------
    def init(self) -> ConclaveServer:
        """Make the data directory with the real `conclave init` and `user add`.

        The result for each (domain, transports, users) is kept as a template
        for the rest of the session and copied for later servers: the CLI
        runs once per shape instead of once per test.
        """
        key = (self.domain, self.transports, tuple(sorted(self.users.items())))
        template = _TEMPLATES.get(key)
        if template is None:
            template = Path(tempfile.mkdtemp(prefix="conclave-template-")) / "data"
            conclave(
                "init", "--domain", self.domain, "--dir", str(template),
                "--transports", self.transports, "--tls-port", "0", "--sip-port", "0",
            )  # fmt: skip
            for name, password in self.users.items():
                conclave("user", "add", name, "--dir", str(template), "--password-stdin",
                         stdin=password + "\n")  # fmt: skip
            _TEMPLATES[key] = template
        shutil.copytree(template, self.data_dir)
        if self.config:
            self._patch_config()
        return self

    def _patch_config(self) -> None:
        path = self.data_dir / "conclave.toml"
        text = path.read_text()
        for section, values in self.config.items():
            for key, value in values.items():
                rendered = json.dumps(value)
                pattern = re.compile(
                    rf"(?ms)^(\[{re.escape(section)}\].*?^){re.escape(key)} = .*?$"
                )
                if pattern.search(text):
                    line = f"{key} = {rendered}"
                    text = pattern.sub(lambda m, line=line: m.group(1) + line, text, count=1)
                else:
                    text += f"\n[{section}]\n{key} = {rendered}\n"
        path.write_text(text)

    @property
    def ca(self) -> Path:
        return self.data_dir / "ca" / "ca.crt"

    # -- process -------------------------------------------------------------------------
    def start(self) -> ConclaveServer:
        """Start (or restart) the server; the log seen so far is forgotten."""
        self._spawn([*CONCLAVE, "serve", "--dir", str(self.data_dir)])
        ready = self.wait_for(lambda e: e.get("event") == "ready", START_TIMEOUT)
        for item in ready.get("listeners", []):
            transport, _host, port = item.split(":")
            self.ports[transport] = int(port)
        return self

    def events(self, name: str) -> list[dict[str, Any]]:
        self.drain()
        return [e for e in self.lines if e.get("event") == name]

    def drain(self) -> None:
        while True:
            try:
                event = self._queue.get_nowait()
            except queue.Empty:
                return
            if event is None:
                return
            self.lines.append(event)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
        self.drain()
        return code

    def target(self, transport: str) -> str:
        return f"127.0.0.1:{self.ports[transport]}"
