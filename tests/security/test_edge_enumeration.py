"""User enumeration against the Access Edge: svwar and a stopwatch, from the internet.

The Edge is where Lync's user enumeration happened (sign-in timing through
the Edge told real names from invented ones). Here the attacker reaches only
the Edge's external listener. ``svwar`` speaks UDP only, and the Edge only
TLS, so a small bridge (:class:`UdpToTls`) carries each datagram onto a TLS
connection to the Edge and each answer back: the Edge sees an ordinary TLS
client. The timing check alternates a real user and an invented one, 500
attempts each, and compares the two medians taken in the same run.
"""

from __future__ import annotations

import socket
import ssl
import statistics
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conclave.config import load_config, write_config
from conclave.sip.framing import Frame, StreamFramer
from conclave.topology.provision import apply_settings
from tests.e2e.edge_deployment import (
    DOMAIN,
    EDGE_EXTERNAL,
    PASSWORDS,
    EdgeDeployment,
    make_deployment,
)
from tests.e2e.peers_base import free_port, require_tool

from .test_enumeration import MAX_MEDIAN_GAP, timed_wrong_password

REAL = sorted(PASSWORDS)
INVENTED = ["dave", "1000", "1001", "admin", "root", "test", "operator", "reception"]
SVWAR_TIMEOUT = 60.0
WARM_UP = 20
ATTEMPTS = 460
"""Timed wrong passwords per user. One run makes (WARM_UP + ATTEMPTS) x 2 = 960 failures
from one source, under the highest lockout a topology may state (1,000 a minute, the
fixture's): with 500, a machine fast enough to make them all within about two seconds got
the source banned before the end."""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeDeployment]:
    """fe1 and edge1 with the guessing limits lifted out of the way (threshold 1000 per
    minute and per account, the Edge's request rate unbounded): what is measured is the
    answer to a wrong password, every time."""
    built = make_deployment(tmp_path_factory.mktemp("edge-enum"), lockout=1000)
    edge_dir = built.host_dir("edge1")
    unlimited = {"limits": {"requests_per_second": 1_000_000.0, "burst": 1_000_000}}
    write_config(edge_dir, apply_settings(load_config(edge_dir), unlimited, source="test"))
    try:
        built.start("fe1", "ready")
        built.start("edge1", "edge ready")
        yield built
    finally:
        for process in built.processes:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()


class UdpToTls:
    """Carries svwar's datagrams to the Edge over one TLS connection, and answers back."""

    def __init__(self, deployment: EdgeDeployment, source: str) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        context = ssl.create_default_context(cafile=deployment.ca)
        raw = socket.create_connection(
            (EDGE_EXTERNAL, deployment.access_port), timeout=10, source_address=(source, 0)
        )
        self.tls = context.wrap_socket(raw, server_hostname=f"sip.{DOMAIN}")
        self.peer: tuple[str, int] | None = None
        self.closed = threading.Event()
        threading.Thread(target=self._up, daemon=True).start()
        threading.Thread(target=self._down, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.udp.getsockname()[1])

    def _up(self) -> None:
        self.udp.settimeout(0.2)
        while not self.closed.is_set():
            try:
                data, self.peer = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.tls.sendall(data)

    def _down(self) -> None:
        framer = StreamFramer()
        self.tls.settimeout(0.2)
        while not self.closed.is_set():
            try:
                chunk = self.tls.recv(65535)
            except TimeoutError:
                continue
            except (OSError, ssl.SSLError):
                return
            if not chunk:
                return
            for event in framer.feed(chunk):
                if isinstance(event, Frame) and self.peer is not None:
                    self.udp.sendto(event.data, self.peer)

    def close(self) -> None:
        self.closed.set()
        self.tls.close()
        self.udp.close()


def svwar(bridge: UdpToTls, tmp_path: Path, method: str, *, force: bool) -> str:
    dictionary = tmp_path / "names.txt"
    dictionary.write_text("\n".join([*INVENTED[:4], *REAL, *INVENTED[4:]]) + "\n")
    argv = [
        require_tool("svwar"), "-d", str(dictionary), "-m", method, "--domain", DOMAIN,
        "-p", str(bridge.port), "-P", str(free_port("udp")), "-b", "127.0.0.1",
        *(["--force"] if force else []), "127.0.0.1",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SVWAR_TIMEOUT)
    return done.stdout + done.stderr


def test_svwar_through_the_edge_finds_no_user(deployment: EdgeDeployment, tmp_path: Path) -> None:
    bridge = UdpToTls(deployment, "127.0.0.61")
    try:
        for method in ("REGISTER", "INVITE", "OPTIONS"):
            for force in (False, True):
                report = svwar(bridge, tmp_path, method, force=force)
                assert "found nothing" in report, report
                assert "authentication request" in report or "SIP/2.0 40" in report, report
                for name in REAL:
                    assert f"| {name} " not in report and f"|{name}|" not in report, report
    finally:
        bridge.close()


@pytest.mark.parametrize(
    ("method", "source"), [("REGISTER", "127.0.0.62"), ("MESSAGE", "127.0.0.63")]
)
def test_a_stopwatch_at_the_edge_cannot_tell_real_users_from_invented_ones(
    deployment: EdgeDeployment, method: str, source: str
) -> None:
    client = deployment.remote(source)
    times: dict[str, list[float]] = {"alice": [], "nosuchuser": []}
    try:
        for _ in range(WARM_UP):  # warm both paths first
            for user in times:
                timed_wrong_password(client, user, method, DOMAIN)
        for _ in range(ATTEMPTS):
            for user, taken in times.items():
                taken.append(timed_wrong_password(client, user, method, DOMAIN))
    finally:
        client.close()
    real, invented = (statistics.median(t) for t in times.values())
    assert abs(real - invented) < MAX_MEDIAN_GAP, (
        f"{method} through the Edge: median {real * 1e3:.3f} ms for a real user, "
        f"{invented * 1e3:.3f} ms for an invented one"
    )
