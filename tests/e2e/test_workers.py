"""``conclave serve --workers 2``: one host, two Front End processes (docs/pools.md).

Both workers listen on the same TLS and UDP ports; the kernel hands each
connection to one of them. alice's connection lands on worker 0 and bob's on
worker 1: every request between them crosses from one worker to the other over
the workers' mutual-TLS relay ports, as between the members of a pool. A UDP
client reaches both. Worker 1 killed with SIGKILL is started again by the
supervisor; its clients sign in again and carry on.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from .edge_deployment import sign_in
from .pool_deployment import talk
from .server import conclave
from .workers_deployment import DOMAIN, WorkersHost, workers_host


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkersHost]:
    with workers_host(tmp_path_factory.mktemp("workers")) as deployment:
        yield deployment


def test_both_workers_share_the_listeners(host: WorkersHost) -> None:
    ready = [e for e in host.server.lines if e.get("event") == "ready"]
    assert sorted(e["worker"] for e in ready) == [0, 1]
    for event in ready:
        assert f"tls:127.0.0.1:{host.tls_port}" in event["listeners"]
        assert f"udp:127.0.0.1:{host.udp_port}" in event["listeners"]
        assert f"tls:127.0.0.1:{host.worker_port + event['worker']}" in event["listeners"]


def test_messages_cross_between_workers(host: WorkersHost) -> None:
    alice = host.sign_in_at(0, "alice")
    bob = host.sign_in_at(1, "bob")
    host.knows(0, "bob", bob, holder=1)
    host.knows(1, "alice", alice, holder=0)
    assert talk(alice, "alice", bob, "bob", b"from worker 0 to worker 1") == 200
    assert talk(bob, "bob", alice, "alice", b"and back") == 200
    # A UDP client lands on one worker; one of alice and bob is at the other.
    carol = host.client(transport="udp")
    assert sign_in(carol, "carol").status == 200
    assert talk(carol, "carol", alice, "alice", b"udp to alice") == 200
    assert talk(carol, "carol", bob, "bob", b"udp to bob") == 200
    for client in (alice, bob, carol):
        client.close()


def test_a_killed_worker_is_started_again_and_its_clients_carry_on(host: WorkersHost) -> None:
    alice = host.sign_in_at(0, "alice", source="127.0.0.2")
    bob = host.sign_in_at(1, "bob", source="127.0.0.2")
    host.knows(0, "bob", bob, holder=1)
    started = [e for e in host.server.lines if e.get("event") == "worker started"]
    victim = [e for e in started if e["worker"] == 1][-1]["pid"]
    seen = len(host.server.lines)
    os.kill(victim, signal.SIGKILL)
    died = host.new_events(seen, lambda e: e.get("event") == "worker died")
    assert died["worker"] == 1 and died["pid"] == victim
    host.new_events(seen, lambda e: e.get("event") == "ready" and e.get("worker") == 1, 60)
    # The new worker 1 deletes what its earlier life left in Redis and worker 0 drops
    # it too; bob's client finds its flow gone and signs in again (wherever the kernel
    # puts it now), and the two talk again.
    old = f"sip:bob@{bob.host}:{bob.local_port};transport=tls"
    host.new_events(
        seen,
        lambda e: (
            e.get("event") == "pool registrations changed"
            and e.get("worker") == 0
            and e.get("aor") == f"sip:bob@{DOMAIN}"
            and old not in e.get("contacts", ())
        ),
        15,
    )
    bob.close()
    bob, landed = host.sign_in_anywhere("bob", source="127.0.0.2")
    if landed != 0:  # alice's worker hears of bob's new connection through Redis
        host.knows(0, "bob", bob, holder=landed)
    assert talk(alice, "alice", bob, "bob", b"after the restart") == 200
    assert talk(bob, "bob", alice, "alice", b"still here") == 200
    alice.close()
    bob.close()


def test_workers_need_the_pool_state(tmp_path: Path) -> None:
    conclave(
        "init", "--domain", DOMAIN, "--dir", str(tmp_path / "d"), "--tls-port", "0",
    )  # fmt: skip
    result = conclave("serve", "--dir", str(tmp_path / "d"), "--workers", "2", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs the pool state" in lines[0] and "[pool] redis" in lines[0]
    bad = conclave(
        "serve", "--dir", str(tmp_path / "d"), "--workers", "2", "--worker", "2", check=False
    )
    assert bad.returncode == 2 and "--worker I needs --workers N" in bad.stderr
