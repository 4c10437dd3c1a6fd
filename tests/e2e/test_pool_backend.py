"""The pool's back end fails over: PostgreSQL streaming replication, synchronous mode.

The pool's database URL names both servers with ``target_session_attrs=read-write``,
so a member always writes to whichever is the primary. Messages for an offline user
are stored (202) while the primary and its synchronous standby both acknowledge every
commit; the primary is killed with SIGKILL; while no server accepts writes a message
for the offline user gets a prompt 503 with Retry-After (never a hang); the standby is
promoted; writes go on there without restarting anything, and the offline user, signing
in, gets every message that was answered 2xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from .edge_deployment import DOMAIN, PASSWORDS, sign_in
from .pool_deployment import PoolDeployment, pool_of_two
from .postgres_cluster import ReplicatedPostgres, start_replicated
from .sipclient import SipClient, digest_header

PROMPT = 15.0
"""An error must come well before a client's own transaction timeout (32 s)."""


@pytest.fixture(scope="module")
def replicated(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PoolDeployment, ReplicatedPostgres]]:
    cluster = start_replicated(synchronous=True)
    try:
        with pool_of_two(tmp_path_factory.mktemp("pool"), back_end=cluster.url) as deployment:
            yield deployment, cluster
    finally:
        cluster.stop()


def message(client: SipClient, to_user: str, text: bytes) -> tuple[int, str | None, float]:
    """bob sends a MESSAGE (with credentials); its final status, Retry-After, and how long."""
    uri = f"sip:{to_user}@{DOMAIN}"
    started = time.monotonic()
    first = client.send("MESSAGE", uri, from_user="bob", headers=["Content-Type: text/plain"],
                        body=text)  # fmt: skip
    assert first.status == 407, first
    auth = digest_header(first, user="bob", password=PASSWORDS["bob"], method="MESSAGE", uri=uri)
    final = client.send(
        "MESSAGE", uri, from_user="bob", headers=["Content-Type: text/plain", auth], body=text
    )
    return final.status, final.headers.get("Retry-After"), time.monotonic() - started


def test_a_primary_killed_loses_no_acknowledged_write(
    replicated: tuple[PoolDeployment, ReplicatedPostgres],
) -> None:
    pool, cluster = replicated
    bob = pool.client("fe2", "127.0.0.61")
    assert sign_in(bob, "bob").status == 200
    stored = [f"before {n}".encode() for n in range(5)]
    for text in stored:
        assert message(bob, "alice", text)[0] == 202  # alice is offline: held in PostgreSQL

    cluster.primary.kill()
    status, retry_after, took = message(bob, "alice", b"while nobody writes")
    assert status == 503 and retry_after is not None, (status, retry_after)
    assert took < PROMPT, took

    cluster.standby.pg_ctl("-w", "promote")
    deadline = time.monotonic() + 30
    while (status := message(bob, "alice", b"after the failover")[0]) != 202:
        assert status == 503 and time.monotonic() < deadline, status
    stored.append(b"after the failover")

    alice = pool.client("fe1", "127.0.0.62")
    assert sign_in(alice, "alice").status == 200
    delivered = []
    for _ in stored:
        incoming = alice.recv_request()
        alice.reply(incoming, 200)
        delivered.append(incoming.body)
    assert sorted(delivered) == sorted(stored)
