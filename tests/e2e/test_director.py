"""The Director: remote sign-ins are authenticated before anything reaches a pool, and each
user lands in their home pool.

Two Enterprise pools on PostgreSQL (ee1 homes alice and carol, ee2 homes bob), a
Director and an Edge, each host a ``conclave serve`` process of a provisioned
topology. Remote users reach only the Edge; the Edge's next hop is the Director.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from conclave.config import load_config
from conclave.store.database import Database
from conclave.store.pairing import PairingStore
from conclave.topology.document import dumps_toml

from .edge_deployment import DOMAIN, EDGE_EXTERNAL, PASSWORDS, free_ports, send_message, sign_in
from .server import conclave
from .sipclient import SipClient
from .test_roles import POSTGRES_ADMIN_URL, RoleProcess

HOMES = {"alice": "ee1", "carol": "ee1", "bob": "ee2"}


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@dataclass
class Deployment:
    root: Path
    ports: dict[str, int]
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def ca(self) -> str:
        return str(self.root / "ca" / "ca.crt")

    def remote(self, source: str) -> SipClient:
        return SipClient(
            "tls", self.ports["access"], domain=DOMAIN, ca=self.ca, host=source,
            server=EDGE_EXTERNAL, server_name=f"sip.{DOMAIN}",
        )  # fmt: skip

    def internal(self, pool: str) -> SipClient:
        return SipClient(
            "tls", self.ports[pool], domain=DOMAIN, ca=self.ca, server_name=f"{pool}.{DOMAIN}"
        )


def member(name: str, roles: list[str], **extra: object) -> dict[str, object]:
    return {
        "name": name,
        "fqdn": f"{name}.{DOMAIN}",
        "address": "127.0.0.1",
        "roles": roles,
    } | extra


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    names = {pool: f"conclave_dir_{pool}_{uuid.uuid4().hex[:10]}" for pool in ("ee1", "ee2")}
    try:
        for name in names.values():
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} not usable: {exc}")
        pytest.skip(f"PostgreSQL not usable: {exc}")  # outside CI only
    urls = {
        pool: make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        for pool, name in names.items()
    }
    root = tmp_path_factory.mktemp("director")
    fe1, fe2, director, internal, access = free_ports(5)
    ports = {"ee1": fe1, "ee2": fe2, "director": director, "access": access}
    doc = {
        "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
        "requirements": {"users": 100, "remote_access": True},
        "sites": {"hq": {}},
        "pools": {
            "ee1": {"site": "hq", "edition": "enterprise", "fqdn": f"ee1.{DOMAIN}",
                    "database": urls["ee1"],
                    "members": [member("fe1", ["frontend"], ports={"sip_tls": fe1})]},
            "ee2": {"site": "hq", "edition": "enterprise", "fqdn": f"ee2.{DOMAIN}",
                    "database": urls["ee2"],
                    "members": [member("fe2", ["frontend"], ports={"sip_tls": fe2})]},
            "dir": {"site": "hq", "edition": "enterprise", "members": [
                member("dir1", ["director"], ports={"director_tls": director})]},
            "edge": {"site": "hq", "edition": "enterprise", "members": [
                member("edge1", ["edge"],
                       ports={"edge_internal_tls": internal, "edge_access_tls": access},
                       edge={"internal": {"fqdn": f"edge1-int.{DOMAIN}", "address": "127.0.0.1"},
                             "external": {"fqdn": f"sip.{DOMAIN}", "address": EDGE_EXTERNAL}})]},
        },
        "policies": {
            "external_access": {"remote_users": True},
            "presence": {"enabled": False},
            "lockout": {"threshold": 5, "duration": "10m"},
        },
    }  # fmt: skip
    topology = root / "topology.toml"
    topology.write_text(dumps_toml(doc))
    conclave("topology", "provision", str(topology), "--all")
    for user, pool in HOMES.items():
        host = "fe1" if pool == "ee1" else "fe2"
        conclave(
            "user", "add", user, "--dir", str(root / "hosts" / host), "--password-stdin",
            stdin=PASSWORDS[user] + "\n",
        )  # fmt: skip
    built = Deployment(root, ports)
    try:
        for host, ready in (("fe1", "ready"), ("fe2", "ready"), ("dir1", "director ready"),
                            ("edge1", "edge ready")):  # fmt: skip
            process = RoleProcess(["serve", "--topology", str(topology), "--host", host]).start()
            built.processes[host] = process
            process.event(ready)
        yield built
    finally:
        for process in built.processes.values():
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        for name in names.values():
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def test_each_remote_user_lands_in_their_home_pool(deployment: Deployment) -> None:
    for user, source in (("alice", "127.0.0.71"), ("bob", "127.0.0.72")):
        assert sign_in(deployment.remote(source), user).status == 200
    fe1, fe2 = deployment.processes["fe1"], deployment.processes["fe2"]
    fe1.wait_for(lambda e: e.get("event") == "register" and e.get("user") == "alice", 10)
    fe2.wait_for(lambda e: e.get("event") == "register" and e.get("user") == "bob", 10)
    assert not [e for e in fe2.lines if e.get("user") == "alice"]
    assert not [e for e in fe1.lines if e.get("user") == "bob"]


def test_messages_through_the_director_both_ways(deployment: Deployment) -> None:
    alice = deployment.remote("127.0.0.73")
    assert sign_in(alice, "alice").status == 200
    carol = deployment.internal("ee1")
    assert sign_in(carol, "carol").status == 200
    send_message(alice, "alice", "carol", b"via the director")
    incoming = carol.recv_request()
    assert incoming.body == b"via the director"
    assert "Conclave-Authenticated" not in incoming.headers
    carol.reply(incoming, 200)
    assert alice.final().status == 200
    send_message(carol, "carol", "alice", b"back to the internet")
    delivered = alice.recv_request()
    assert delivered.body == b"back to the internet"
    alice.reply(delivered, 200)
    assert carol.final().status == 200


def test_a_failed_sign_in_never_reaches_a_pool(deployment: Deployment) -> None:
    """The Director answers wrong passwords itself and bans the guesser at the Edge; the
    Front Ends never see the attempts."""
    attacker = deployment.remote("127.0.0.74")
    answers = []
    for attempt in range(30):
        try:
            answers.append(sign_in(attacker, "alice", password=f"guess-{attempt}").status)
        except (ConnectionError, OSError):
            break  # banned at the Edge
    assert answers and 200 not in answers and len(answers) < 30
    director = deployment.processes["dir1"]
    failed = director.wait_for(lambda e: e.get("event") == "authentication failed", 10)
    assert failed["source"] == "127.0.0.74"
    for host in ("fe1", "fe2"):
        process = deployment.processes[host]
        assert not [e for e in process.lines if e.get("event") == "authentication failed"]
        assert not [e for e in process.lines if e.get("source") == "127.0.0.74"]
    edge = deployment.processes["edge1"]
    banned = edge.wait_for(lambda e: e.get("event") == "source banned", 10)
    assert banned["source"] == "127.0.0.74"
    # alice still signs in from a familiar place (she did, from .73, in the test above).
    assert sign_in(deployment.remote("127.0.0.73"), "alice").status == 200


def test_a_failed_over_pool_s_users_go_to_the_partner(deployment: Deployment) -> None:
    """After ee2 takes ee1's users over (pool failover, docs/pools.md), the Director sends
    them to ee2, even while ee1's back end still lists them; after failback, home again."""
    dirs = {
        pool: deployment.root / "hosts" / host for pool, host in (("ee1", "fe1"), ("ee2", "fe2"))
    }

    async def over() -> None:
        urls = {p: load_config(d).database_url(d) for p, d in dirs.items()}
        async with Database(urls["ee1"]) as home, Database(urls["ee2"]) as partner:
            snapshot = await PairingStore(home).snapshot()
            await PairingStore(partner).take_over("ee1", snapshot, dt.datetime.now(dt.UTC))

    async def back() -> None:
        url = load_config(dirs["ee2"]).database_url(dirs["ee2"])
        async with Database(url) as partner:
            await PairingStore(partner).hand_back("ee1")

    director, fe2 = deployment.processes["dir1"], deployment.processes["fe2"]
    reloads = len([e for e in director.lines if e.get("event") == "users reloaded"])
    asyncio.run(over())
    try:
        director.wait_for(
            lambda e: (
                e.get("event") == "users reloaded"
                and len([x for x in director.lines if x.get("event") == "users reloaded"]) > reloads
            ),
            15,
        )
        fe2.wait_for(
            lambda e: e.get("event") == "users reloaded" and e.get("trigger") == "change", 15
        )
        assert sign_in(deployment.remote("127.0.0.75"), "carol").status == 200
        fe2.wait_for(lambda e: e.get("event") == "register" and e.get("user") == "carol", 10)
    finally:
        asyncio.run(back())
    assert not [
        e for e in director.lines if e.get("event") == "user in two pools; the first keeps it"
    ]
