"""The pool's Redis fails over under Redis Sentinel, and the pool carries on by itself.

A private Redis master, its replica and a Sentinel watching them; the pool's state
is ``sentinel://…/conclave``. The master is killed with SIGKILL: the Sentinel
promotes the replica, each member finds the new master, writes what it holds
again, and requests keep crossing between the members: both for clients
registered before the failover and for one who registers after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.cluster.redis_servers import RedisServer

from .edge_deployment import sign_in
from .pool_deployment import PoolDeployment, knows, pool_of_two, talk

SERVICE = "conclave"


@pytest.fixture(scope="module")
def sentinel_pool(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PoolDeployment, list[RedisServer]]]:
    directory = tmp_path_factory.mktemp("sentinel")
    master = RedisServer(directory / "master").start()
    replica = RedisServer(directory / "replica", replica_of=master.port).start()
    sentinel = RedisServer(directory / "sentinel", sentinel_of=(SERVICE, master.port)).start()
    servers = [master, replica, sentinel]
    try:
        state = f"sentinel://127.0.0.1:{sentinel.port}/{SERVICE}"
        with pool_of_two(tmp_path_factory.mktemp("pool"), state) as deployment:
            yield deployment, servers
    finally:
        for server in servers:
            server.kill()


def master_port(sentinel: RedisServer) -> int:
    with redis.Redis(port=sentinel.port, socket_timeout=2) as client:
        _host, port = client.sentinel_get_master_addr_by_name(SERVICE)
    return int(port)


def test_the_pool_rides_out_a_sentinel_failover(
    sentinel_pool: tuple[PoolDeployment, list[RedisServer]],
) -> None:
    pool, (master, replica, sentinel) = sentinel_pool
    alice, bob = pool.client("fe1", "127.0.0.41"), pool.client("fe2", "127.0.0.42")
    assert sign_in(alice, "alice").status == 200
    assert sign_in(bob, "bob").status == 200
    knows(pool.processes["fe2"], alice, "alice", "fe1")
    knows(pool.processes["fe1"], bob, "bob", "fe2")
    assert talk(bob, "bob", alice, "alice", b"bob to alice") == 200

    master.kill()
    deadline = time.monotonic() + 30
    while master_port(sentinel) != replica.port:  # the Sentinel's decision is the event
        assert time.monotonic() < deadline, "the Sentinel did not fail over"
        time.sleep(0.1)
    for member in ("fe1", "fe2"):
        pool.processes[member].wait_for(
            lambda e: e.get("event") == "pool state connected" and e.get("again"), 20
        )
    # Both registered before the failover:
    assert talk(bob, "bob", alice, "alice", b"bob to alice") == 200
    assert talk(alice, "alice", bob, "bob", b"alice to bob") == 200
    carol = pool.client("fe1", "127.0.0.43")
    assert sign_in(carol, "carol").status == 200  # registered after it
    knows(pool.processes["fe2"], carol, "carol", "fe1")
    assert talk(bob, "bob", carol, "carol", b"bob to carol") == 200
