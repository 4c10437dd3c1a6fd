"""A real DNS server for tests: Debian's ``dnsmasq`` serving one configuration file.

``Dnsmasq(conf).start()`` runs ``dnsmasq`` in the foreground on 127.0.0.1 and
a free port (UDP and TCP), answering only from ``conf`` (no upstream servers,
no /etc/hosts) and logging every query to ``log``; it returns once dnsmasq has
logged "started, version". ``stop()`` ends it. Under CI=true a missing dnsmasq
fails the test (``require_tool``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType

from .peers_base import HOST, free_port, require_tool, stop_process

START_TIMEOUT = 10.0
STARTS = 5
"""Attempts with a new port when another process took the free one first."""


def dnsmasq_binary() -> str:
    # Debian installs it in /usr/sbin, which a non-root PATH may not hold.
    found = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")
    return found or require_tool("dnsmasq")


class Dnsmasq:
    def __init__(self, conf: Path) -> None:
        self.conf = conf
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = conf.with_suffix(".log")

    def start(self) -> Dnsmasq:
        binary = dnsmasq_binary()
        for _ in range(STARTS):
            self.port = free_port("both")
            with self.log.open("wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "--keep-in-foreground", "--log-facility=-", "--log-queries",
                     "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces",
                     f"--listen-address={HOST}", f"--port={self.port}",
                     f"--conf-file={self.conf}", "--pid-file=",
                     "--user=" + (os.environ.get("USER") or "root")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                text = self.log.read_text(errors="replace")
                if "started, version" in text:
                    return self
                if self.proc.poll() is not None:
                    break  # a port taken meanwhile, or a bad configuration: see the log
                time.sleep(0.02)
            self.stop()
            if "Address already in use" not in self.log.read_text(errors="replace"):
                raise RuntimeError(f"dnsmasq did not start:\n{self.log.read_text()[-2000:]}")
        raise RuntimeError(f"dnsmasq found no free port in {STARTS} attempts")

    def stop(self) -> None:
        stop_process(self.proc)

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
