"""An attacker against the pairing listener (the backup service between paired pools).

fe-a1's pairing listener takes copies of ee1's partner (ee2) from ee2's Front Ends only:
a client without a certificate never completes the handshake, a server certificate of
the deployment that is not a partner member's is closed before anything is read, and
even the partner cannot overwrite the copy of another pool, replay an older copy over a
newer one, or make the listener hold a line without end.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.paired_deployment import Paired, paired_pools


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paired]:
    with paired_pools(tmp_path_factory.mktemp("paired")) as deployment:
        yield deployment


def status(paired: Paired) -> dict[str, dict[str, Any]]:
    return paired.status()


def _connect(paired: Paired, as_host: str | None) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(paired.root / "ca" / "ca.crt"))
    if as_host is not None:
        tls = paired.root / "hosts" / as_host / "tls"
        context.load_cert_chain(str(tls / "server.crt"), str(tls / "server.key"))
    raw = socket.create_connection(("127.0.5.1", paired.pairing_ports["fe-a1"]), timeout=10)
    return context.wrap_socket(raw, server_hostname="fe-a1.example.test")


def _closed(sock: ssl.SSLSocket) -> bool:
    """True once the listener has closed the connection (EOF, a reset or a TLS alert);
    False when it kept it open (nothing came for the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True


def _snapshot(pool: str, changed_at: dt.datetime, users: list[str]) -> bytes:
    records = [
        {"name": u, "domain": "example.test", "ha1_md5": "0" * 32, "ha1_sha256": "0" * 64,
         "disabled": False, "created_at": changed_at.isoformat(), "contacts": [], "privacy": []}
        for u in users
    ]  # fmt: skip
    message = {"type": "snapshot", "pool": pool, "changed_at": changed_at.isoformat(),
               "snapshot": {"users": records}}  # fmt: skip
    return json.dumps(message).encode() + b"\n"


def test_no_certificate_no_connection(paired: Paired) -> None:
    try:
        sock = _connect(paired, None)
        sock.sendall(b'{"type": "heartbeat", "pool": "ee2"}\n')
    except (ssl.SSLError, ConnectionError):
        return  # refused in the handshake
    assert _closed(sock)  # or by the alert that follows it (TLS 1.3)


def test_the_partner_itself_is_kept_connected(paired: Paired) -> None:
    """The control for the refusals: the partner's member is not cut off."""
    sock = _connect(paired, "fe-b1")
    sock.settimeout(1)
    sock.sendall(b'{"type": "heartbeat", "pool": "ee2", "at": "2026-01-01T00:00:00+00:00"}\n')
    assert not _closed(sock)
    sock.close()


def test_a_deployment_server_that_is_not_the_partner_is_refused(paired: Paired) -> None:
    sock = _connect(paired, "fe-a1")  # a valid server certificate, but ee1's own member
    sock.settimeout(5)
    sock.sendall(_snapshot("ee2", dt.datetime.now(dt.UTC), ["mallory"]))
    assert _closed(sock)
    paired.processes["fe-a1"].wait_for(lambda e: e.get("event") == "pairing connection refused", 10)


def test_the_partner_cannot_write_another_pool_s_copy_or_an_older_one(paired: Paired) -> None:
    before = status(paired)["ee1"].get("partner_copy")
    sock = _connect(paired, "fe-b1")
    sock.sendall(_snapshot("ee9", dt.datetime.now(dt.UTC), ["mallory"]))
    assert _closed(sock)
    sock = _connect(paired, "fe-b1")
    sock.sendall(_snapshot("ee2", dt.datetime(2000, 1, 1, tzinfo=dt.UTC), ["mallory"]))
    sock.sendall(b"this is not json\n")
    assert _closed(sock)
    after = status(paired)["ee1"].get("partner_copy")
    assert after is not None and after["users"] == 1  # bob's pool: bob, not mallory
    if before is not None:
        assert after["changed_at"] >= before["changed_at"]


def test_a_line_without_end_is_cut_off(paired: Paired) -> None:
    sock = _connect(paired, "fe-b1")
    chunk = b"x" * (1 << 20)
    with pytest.raises((ConnectionError, ssl.SSLError, OSError)):
        for _ in range(80):  # 80 MiB: past the 64 MiB bound on one message
            sock.sendall(chunk)
        assert _closed(sock)
        raise ConnectionError("closed")
    paired.processes["fe-a1"].wait_for(lambda e: e.get("event") == "pairing connection ended", 10)
