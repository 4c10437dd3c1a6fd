"""An Enterprise pool whose back end Patroni fails over, configured by Conclave (docs/pools.md).

The topology describes the pool's two PostgreSQL servers (``back_end``, Patroni,
synchronous); ``conclave topology publish`` writes Patroni's files, Patroni (with a
private etcd) bootstraps the primary and clones a synchronous standby, and
``conclave topology provision`` migrates the database through the URL it derives
(both servers, read-write target, the owner's password). Then:

messages for offline alice are stored (202); the primary's Patroni and PostgreSQL
are killed with SIGKILL; while nobody accepts writes, a message gets a prompt 503
with Retry-After; Patroni promotes the standby by itself when the leader's lock
expires; the Front End, never restarted, stores again; and alice, signing in, gets
every message that was answered 2xx.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conclave.topology.backend import PATRONI_TTL
from conclave.topology.document import dumps_toml

from .edge_deployment import DOMAIN, PASSWORDS, sign_in
from .patroni_cluster import (
    Etcd,
    PatroniCluster,
    back_end,
    patroni_root,
    start_cluster,
    wait_until,
)
from .peers_base import free_port
from .server import conclave
from .sipclient import SipClient
from .test_pool_pairing import PROMPT, delivered, message
from .test_roles import RoleProcess

POOL = "ee"
FAILOVER_TIMEOUT = PATRONI_TTL + 40
"""The leader's lock expires after ttl; Patroni's next rounds promote the standby."""


@dataclass
class Deployment:
    root: Path
    port: int
    cluster: PatroniCluster
    frontend: RoleProcess

    def client(self, source: str) -> SipClient:
        return SipClient(
            "tls", self.port, domain=DOMAIN, ca=str(self.root / "ca" / "ca.crt"), host=source,
            server="127.0.0.1", server_name=f"fe1.{DOMAIN}",
        )  # fmt: skip


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("patroni")
    with patroni_root() as pg_root:
        etcd = Etcd(pg_root)
        etcd.start()
        cluster: PatroniCluster | None = None
        frontend: RoleProcess | None = None
        try:
            back, _servers = back_end(pg_root, etcd)
            port = free_port("tcp")
            doc = {
                "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
                "requirements": {"users": 100, "high_availability": True},
                "sites": {"hq": {}},
                "pools": {
                    POOL: {
                        "site": "hq", "edition": "enterprise", "fqdn": f"pool.{DOMAIN}",
                        "back_end": back,
                        "members": [{"name": "fe1", "fqdn": f"fe1.{DOMAIN}",
                                     "address": "127.0.0.1", "roles": ["frontend"],
                                     "ports": {"sip_tls": port}}],
                    },
                },
                "policies": {"presence": {"enabled": True}},
            }  # fmt: skip
            topology = root / "topology.toml"
            topology.write_text(dumps_toml(doc))
            files = pg_root / "files"
            conclave(
                "topology", "publish", str(topology), "--output", str(files),
                "--config-dir", str(files),
            )  # fmt: skip
            cluster = start_cluster(pg_root, etcd, files, POOL)
            conclave("topology", "provision", str(topology), "--all")
            for user, password in PASSWORDS.items():
                conclave(
                    "user", "add", user, "--dir", str(root / "hosts" / "fe1"),
                    "--password-stdin", stdin=password + "\n",
                )  # fmt: skip
            frontend = RoleProcess(["serve", "--topology", str(topology), "--host", "fe1"])
            frontend.start()
            frontend.event("ready")
            yield Deployment(root, port, cluster, frontend)
        finally:
            if frontend is not None and frontend.proc is not None:
                frontend.stop()
            if cluster is not None:
                for server in cluster.servers:
                    server.stop()
            etcd.stop()


def test_the_published_configuration_is_what_patroni_runs(deployment: Deployment) -> None:
    members = {m["name"]: m for m in deployment.cluster.cluster()}
    assert {m["role"] for m in members.values()} == {"leader", "sync_standby"}
    url = deployment.frontend.wait_for(lambda e: e.get("event") == "ready")
    assert url  # the Front End started on the URL provisioning derived
    config = (deployment.root / "hosts" / "fe1" / "conclave.toml").read_text()
    ports = [s.port for s in deployment.cluster.servers]
    assert all(f"host=127.0.0.1:{p}" in config for p in ports)
    assert "target_session_attrs=read-write" in config


def test_patroni_promotes_the_standby_and_no_acknowledged_write_is_lost(
    deployment: Deployment,
) -> None:
    cluster = deployment.cluster
    carol = deployment.client("127.0.0.81")
    assert sign_in(carol, "carol").status == 200
    stored = [f"before {n}".encode() for n in range(5)]
    for text in stored:
        assert message(carol, "carol", "alice", text)[0] == 202  # alice is offline: held

    primary = cluster.primary()
    assert primary is not None
    standby = next(s for s in cluster.servers if s is not primary)
    primary.kill()
    killed = time.monotonic()
    status, retry_after, took = message(carol, "carol", "alice", b"while nobody writes")
    assert status == 503 and retry_after is not None, (status, retry_after)
    assert took < PROMPT, took

    # Patroni promotes the standby once the dead leader's lock expires; nobody runs pg_ctl.
    wait_until(lambda: standby.is_primary, FAILOVER_TIMEOUT, "Patroni's promotion")
    promoted = time.monotonic() - killed
    deadline = time.monotonic() + 30
    sent = 0  # the Front End's next connection finds the new primary by itself
    while (status := message(carol, "carol", "alice", f"retry {sent}".encode())[0]) != 202:
        assert status == 503 and time.monotonic() < deadline, status
        sent += 1
    stored.append(f"retry {sent}".encode())
    print(f"promoted {promoted:.1f} s and writes accepted {time.monotonic() - killed:.1f} s "
          f"after the primary died ({sent} refused with 503 after the promotion)")  # fmt: skip

    # A 503 answered because the connection died after COMMIT was sent is in doubt: the
    # write may have reached the standby (the sender retries; at worst a duplicate). Every
    # acknowledged (202) message must arrive; a refused one may, nothing else may.
    in_doubt = {b"while nobody writes", *(f"retry {n}".encode() for n in range(sent))}
    alice = deployment.client("127.0.0.82")
    assert sign_in(alice, "alice").status == 200
    received: list[bytes] = []
    while not set(stored) <= set(received):
        body = delivered(alice, 1)[0]
        assert body in set(stored) | in_doubt and body not in received, (body, received)
        received.append(body)
    alice.close()
    carol.close()


def test_the_back_end_admits_only_what_the_topology_lists(deployment: Deployment) -> None:
    """pg_hba as Conclave wrote it: the pool's owner with its password, replication only
    for the replication user, no password-less access over TCP."""
    import asyncio

    import asyncpg

    primary = deployment.cluster.primary()
    assert primary is not None

    async def attempt(user: str, password: str | None, database: str) -> str:
        try:
            connection = await asyncpg.connect(
                host="127.0.0.1", port=primary.port, user=user, password=password,
                database=database, timeout=5,
            )  # fmt: skip
        except (asyncpg.PostgresError, OSError) as exc:
            return type(exc).__name__
        await connection.close()
        return "connected"

    assert asyncio.run(attempt("conclave", "not-the-password", "conclave")) != "connected"
    assert asyncio.run(attempt("conclave", None, "conclave")) != "connected"
    assert asyncio.run(attempt("replicator", "guess", "conclave")) != "connected"
    assert asyncio.run(attempt("postgres", None, "postgres")) != "connected"
