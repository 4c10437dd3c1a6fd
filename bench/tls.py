"""TLS for sipp: stunnel in client mode in front of a server's TLS port.

Debian's sipp 3.6.1 is built without TLS. A relay written in Python would
be the bottleneck, so sipp speaks plain TCP to a local stunnel (C, one
thread per connection), which opens one TLS connection to the server and
verifies its certificate against the deployment's CA and 127.0.0.1. The
server sees one TLS connection carrying every request, as from a TLS
proxy or a busy client; the handshake cost is paid once per run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .kamailio_server import free_port
from .servers import HOST, tcp_listening, wait_for


def stunnel_binary() -> str | None:
    return shutil.which("stunnel4") or shutil.which("stunnel")


class Stunnel:
    """``stunnel`` accepting TCP on :attr:`port`, connecting with TLS to ``upstream``."""

    def __init__(self, upstream: str, ca_file: Path, workdir: Path) -> None:
        self.upstream, self.ca_file, self.workdir = upstream, ca_file, workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> Stunnel:
        binary = stunnel_binary()
        if binary is None:
            raise RuntimeError("stunnel is not installed (scripts/install-bench.sh)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = self.workdir / "stunnel.conf"
        conf.write_text(
            f"foreground = yes\npid =\nsyslog = no\ndebug = 3\n"
            f"output = {self.workdir / 'stunnel.log'}\n\n"
            f"[sip]\nclient = yes\naccept = {HOST}:{self.port}\nconnect = {self.upstream}\n"
            f"CAfile = {self.ca_file}\nverifyChain = yes\ncheckIP = {HOST}\n"
            "sslVersionMin = TLSv1.2\nTIMEOUTidle = 3600\n"
        )
        self.proc = subprocess.Popen(
            [binary, str(conf)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        proc = self.proc
        wait_for(lambda: tcp_listening(self.port), 10, "stunnel to listen",
                 lambda: proc.poll() is None)  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> Stunnel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
