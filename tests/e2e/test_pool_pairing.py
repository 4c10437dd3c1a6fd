"""Two paired pools of two Front Ends each, ee1's back end a replicated PostgreSQL, all
from one topology document (:mod:`.paired_deployment`).

1. ee1's back end fails over: messages for offline alice are stored (202) while the
   primary and its synchronous standby both acknowledge every commit; the primary is
   killed; while nobody accepts writes a message for her gets a prompt 503 with
   Retry-After (never a hang); the standby is promoted; writes go on there without a
   restart, and alice, signing in, gets every message answered 2xx.
2. The whole of ee1 dies: ee2, which holds a copy of ee1's users (backup service, mutual
   TLS), takes them over after 5 s of silence; alice signs in at ee2 with her contact
   list and messages bob across ee2's two members; what she changes there comes home
   with `conclave pool failback`.
3. The manual commands and their refusals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from .edge_deployment import DOMAIN, PASSWORDS, sign_in
from .paired_deployment import Paired, paired_pools
from .pool_deployment import talk
from .postgres_cluster import ReplicatedPostgres, start_replicated
from .server import conclave
from .sipclient import SipClient, digest_header
from .test_metrics import admin_port, scrape

PROMPT = 15.0
"""An error must come well before a client's own transaction timeout (32 s)."""


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Paired, ReplicatedPostgres]]:
    cluster = start_replicated(synchronous=True)
    try:
        root = tmp_path_factory.mktemp("paired")
        with paired_pools(root, members=2, ee1_back_end=cluster.url) as deployment:
            yield deployment, cluster
    finally:
        cluster.stop()


def either(
    pool: Paired, name: str, match: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    """The first event ``match`` accepts in the log of any member of pool ``name``."""
    deadline = time.monotonic() + timeout
    while True:
        for host in pool.members(name):
            with contextlib.suppress(AssertionError):
                return pool.processes[host].wait_for(match, 0.1)
        assert time.monotonic() < deadline, f"no member of {name} logged it in {timeout}s"


def message(
    client: SipClient, user: str, to_user: str, text: bytes
) -> tuple[int, str | None, float]:
    """A MESSAGE with credentials: its final status, Retry-After, and how long it took."""
    uri = f"sip:{to_user}@{DOMAIN}"
    started = time.monotonic()
    headers = ["Content-Type: text/plain"]
    first = client.send("MESSAGE", uri, from_user=user, headers=headers, body=text)
    assert first.status == 407, first
    auth = digest_header(first, user=user, password=PASSWORDS[user], method="MESSAGE", uri=uri)
    final = client.send("MESSAGE", uri, from_user=user, headers=[*headers, auth], body=text)
    return final.status, final.headers.get("Retry-After"), time.monotonic() - started


def delivered(client: SipClient, count: int) -> list[bytes]:
    """The bodies of the next ``count`` requests to ``client`` (each answered 200): the
    offline messages a user gets on signing in."""
    bodies = []
    for _ in range(count):
        incoming = client.recv_request()
        client.reply(incoming, 200)
        bodies.append(incoming.body)
    return bodies


def test_the_back_end_fails_over_and_loses_no_acknowledged_write(
    paired: tuple[Paired, ReplicatedPostgres],
) -> None:
    pool, cluster = paired
    carol = pool.client("fe-a2", "127.0.0.61")
    assert sign_in(carol, "carol").status == 200
    stored = [f"before {n}".encode() for n in range(5)]
    for text in stored:
        assert message(carol, "carol", "alice", text)[0] == 202  # alice is offline: held

    cluster.primary.kill()
    status, retry_after, took = message(carol, "carol", "alice", b"while nobody writes")
    assert status == 503 and retry_after is not None, (status, retry_after)
    assert took < PROMPT, took

    cluster.standby.pg_ctl("-w", "promote")
    deadline = time.monotonic() + 30
    while (status := message(carol, "carol", "alice", b"after the failover")[0]) != 202:
        assert status == 503 and time.monotonic() < deadline, status
    stored.append(b"after the failover")

    alice = pool.client("fe-a1", "127.0.0.62")
    assert sign_in(alice, "alice").status == 200
    assert sorted(delivered(alice, len(stored))) == sorted(stored)
    alice.close()
    carol.close()


def test_a_failed_pool_s_users_carry_on_at_its_partner_and_come_home(
    paired: tuple[Paired, ReplicatedPostgres],
) -> None:
    pool, _cluster = paired
    fe_b1 = pool.processes["fe-b1"]
    copied = fe_b1.wait_for(
        lambda e: e.get("event") == "pool backup received" and e.get("pool") == "ee1", 20
    )
    assert copied["users"] == 2
    lag = scrape(admin_port(fe_b1)).get(
        ("conclave_pairing_replication_lag_seconds", (("pool", "ee1"),))
    )
    assert lag is not None and 0 <= lag < 30, lag
    assert pool.status()["ee2"]["partner_copy"]["users"] == 2

    bob = pool.client("fe-b2", "127.0.0.71")
    assert sign_in(bob, "bob").status == 200
    for host in pool.members("ee1"):  # the whole of pool ee1
        os.kill(pool.processes[host].pid, signal.SIGKILL)
    killed = time.monotonic()
    taken = either(pool, "ee2", lambda e: e.get("event") == "pool failover", 30)
    assert taken["pool"] == "ee1" and taken["users"] == 2 and taken["trigger"] == "automatic"
    fe_b1.wait_for(  # the member that took over reloads at once, the other within 5 s
        lambda e: e.get("event") == "users reloaded" and e.get("time", "") > taken["time"], 15
    )
    alice = pool.client("fe-b1", "127.0.0.72")
    assert sign_in(alice, "alice").status == 200  # at the partner, her password as ever
    assert talk(alice, "alice", bob, "bob", b"from the partner pool") == 200  # fe-b1 -> fe-b2
    print(f"alice served at the partner {time.monotonic() - killed:.1f} s after ee1 died")
    assert pool.contacts("fe-b1", "alice") == [f"sip:carol@{DOMAIN}"]  # her list came along
    conclave("contacts", "add", "alice", f"sip:bob@{DOMAIN}",
             "--dir", str(pool.root / "hosts" / "fe-b1"))  # fmt: skip
    assert "ee1" in pool.status()["ee2"]["serving_for"]

    for host in pool.members("ee1"):  # ee1 is back: its users go home with what changed
        pool.start(host)
    out = conclave("pool", "failback", "ee1", "--topology", str(pool.topology)).stdout
    assert "2 users served at home again" in out
    assert pool.contacts("fe-a1", "alice") == [f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"]
    pool.processes["fe-a1"].wait_for(
        lambda e: e.get("event") == "users reloaded" and e.get("trigger") != "startup", 15
    )
    home = pool.client("fe-a1", "127.0.0.73")
    assert sign_in(home, "alice").status == 200
    assert pool.status()["ee2"]["serving_for"] == {}


def test_manual_failover_and_its_refusals(paired: tuple[Paired, ReplicatedPostgres]) -> None:
    pool, _cluster = paired
    topology = str(pool.topology)
    out = conclave("pool", "failover", "ee1", "--topology", topology).stdout
    assert "failed over to ee2: 2 users" in out
    again = conclave("pool", "failover", "ee1", "--topology", topology, check=False)
    assert again.returncode == 1 and "already" in again.stderr and "Traceback" not in again.stderr
    conclave("pool", "failback", "ee1", "--topology", topology)
    twice = conclave("pool", "failback", "ee1", "--topology", topology, check=False)
    assert twice.returncode == 1 and "has not failed over" in twice.stderr
    unknown = conclave("pool", "failover", "nowhere", "--topology", topology, check=False)
    assert unknown.returncode == 1 and "no Enterprise Front End pool" in unknown.stderr
