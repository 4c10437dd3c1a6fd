"""An attacker against a host running ``conclave serve --workers 2`` (docs/pools.md).

* A password guesser whose connections the kernel spreads over both workers gets
  the lockout threshold once, not once per worker: the workers share one lockout.
* A worker's relay port takes only its siblings: a client without a certificate
  cannot finish the handshake, and a user's certificate from the same CA (which
  the handshake accepts) is not a server's: the connection is closed unanswered.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator

import pytest

from tests.e2e.edge_deployment import PASSWORDS, sign_in
from tests.e2e.server import conclave
from tests.e2e.sipclient import TIMEOUT, SipClient
from tests.e2e.workers_deployment import (
    DOMAIN,
    LOCKOUT_THRESHOLD,
    MAX_LANDING_TRIES,
    WorkersHost,
    workers_host,
)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersHost]:
    with workers_host(tmp_path_factory.mktemp("workers-attack")) as deployment:
        yield deployment


def _attempt(host: WorkersHost, user: str, password: str, source: str) -> tuple[int, int]:
    """One sign-in over a new connection from ``source``: (final status, worker)."""
    client = host.client(source)
    seen = len(host.server.lines)
    try:
        status = sign_in(client, user, password).status
    finally:
        client.close()
    if status == 200:
        event = host.new_events(
            seen, lambda e: e.get("event") == "register" and e.get("user") == user
        )
    else:  # a wrong password, or the right one for a locked account
        event = host.new_events(
            seen,
            lambda e: (
                e.get("event") in ("authentication failed", "sign-in refused: account locked")
                and e.get("source") == source
            ),
        )
    return status, int(event["worker"])


def test_a_guesser_spread_over_the_workers_gets_the_threshold_once(host: WorkersHost) -> None:
    user = "carol"
    workers: list[int] = []
    addresses = (f"127.0.0.{100 + i}" for i in range(MAX_LANDING_TRIES))
    # Wrong passwords, each from a new address (no per-source ban), until both workers
    # have counted some and the pool as a whole has seen the threshold.
    while len(workers) < LOCKOUT_THRESHOLD or len(set(workers)) < 2:
        status, worker = _attempt(host, user, "not-the-password", next(addresses))
        assert status == 401
        workers.append(worker)
        assert len(workers) < MAX_LANDING_TRIES, "the kernel never used the second worker"
    # One worker counted fewer failures than the threshold on its own...
    assert min(workers.count(0), workers.count(1)) < LOCKOUT_THRESHOLD
    locked = host.server.wait_for(
        lambda e: e.get("event") == "account locked" and e.get("user") == user
    )
    # ...yet the right password from a new address is refused at either worker.
    refused: set[int] = set()
    while refused != {0, 1}:
        status, worker = _attempt(host, user, PASSWORDS[user], next(addresses))
        assert status == 401, f"worker {worker} let a locked account in"
        refused.add(worker)
    other = 1 - int(locked["worker"])
    host.server.wait_for(
        lambda e: (
            e.get("event") == "account locked at another member"
            and e.get("user") == user
            and e.get("worker") == other
        )
    )
    # The administrator's reset reaches both workers.
    seen = len(host.server.lines)
    conclave("lockout", "reset", user, "--dir", str(host.server.data_dir))
    host.new_events(
        seen,
        lambda e: (
            e.get("event") == "account unlocked at another member"
            and e.get("user") == user
            and e.get("worker") == 1
        ),
    )
    admitted: set[int] = set()
    while admitted != {0, 1}:
        status, worker = _attempt(host, user, PASSWORDS[user], next(addresses))
        assert status == 200, f"worker {worker} kept {user} locked after the reset"
        admitted.add(worker)


def _relay_socket(host: WorkersHost, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", host.worker_port), timeout=TIMEOUT)
    return context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_the_relay_port_refuses_clients_and_users_certificates(host: WorkersHost) -> None:
    plain = ssl.create_default_context(cafile=host.ca)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        sock = _relay_socket(host, plain)
        sock.sendall(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
        if not sock.recv(1):  # TLS 1.3: the refusal arrives with the first read
            raise ConnectionError("closed")
    data = host.server.data_dir
    conclave("certs", "issue", "--dir", str(data), "--client", "alice")
    clients = data / "tls" / "clients"
    user = ssl.create_default_context(cafile=host.ca)
    user.load_cert_chain(str(clients / "alice.crt"), str(clients / "alice.key"))
    sock = _relay_socket(host, user)  # the CA signed it: the handshake completes

    class UserCertClient(SipClient):
        def __post_init__(self) -> None:
            self._sock = sock

    client = UserCertClient("tls", host.worker_port, domain=DOMAIN)
    seen = len(host.server.lines)
    route = f"Route: <sip:token@{host.member(0)}:{host.worker_port};transport=tls;lr>"
    client.send_raw(
        client.request(
            "MESSAGE", f"sip:bob@{DOMAIN}", from_user="alice",
            headers=[route, "Content-Type: text/plain"], body=b"let me in",
        )
    )  # fmt: skip
    host.new_events(seen, lambda e: e.get("event") == "relay connection refused: not a pool member")
    sock.settimeout(TIMEOUT)
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        if not sock.recv(4096):
            raise ConnectionError("closed without an answer")
