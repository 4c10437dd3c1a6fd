"""An Enterprise pool of two Front Ends sharing PostgreSQL and Redis, on loopback.

fe1 listens on 127.0.4.1 and fe2 on 127.0.4.2 (any address of 127.0.0.0/8 works
on Linux; distinct ones keep each member's own address out of its clients'),
clients connect from 127.0.0.1. Each test module gets its own PostgreSQL
database and its own Redis key prefix, so runs never see each other's state.
Both hosts are provisioned from one topology and run as ``conclave serve
--topology FILE --host NAME``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest
import redis
from sqlalchemy.engine import make_url

from conclave.topology.document import dumps_toml

from .edge_deployment import DOMAIN, PASSWORDS, send_message
from .server import conclave
from .sipclient import SipClient
from .test_roles import POSTGRES_ADMIN_URL, RoleProcess, _admin

REDIS_URL = os.environ.get("CONCLAVE_TEST_REDIS", "redis://127.0.0.1:6379/0")
MEMBERS = {"fe1": "127.0.4.1", "fe2": "127.0.4.2"}


def _peers_or_fail(database: str) -> None:
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{database}"'))
        redis.Redis.from_url(REDIS_URL, socket_timeout=5).ping()
    except (OSError, asyncpg.PostgresError, TimeoutError, redis.RedisError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL or Redis not usable: {exc}")
        pytest.skip(f"PostgreSQL or Redis not usable: {exc}")  # outside CI only


@dataclass
class PoolDeployment:
    root: Path
    ports: dict[str, int]
    prefix: str
    state: str = REDIS_URL
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def ca(self) -> str:
        return str(self.root / "ca" / "ca.crt")

    @property
    def topology(self) -> Path:
        return self.root / "topology.toml"

    def client(self, member: str, source: str = "127.0.0.1") -> SipClient:
        """A client connected to ``member`` directly."""
        return SipClient(
            "tls", self.ports[member], domain=DOMAIN, ca=self.ca, host=source,
            server=MEMBERS[member], server_name=f"{member}.{DOMAIN}",
        )  # fmt: skip

    def start(self, member: str) -> RoleProcess:
        process = RoleProcess(["serve", "--topology", str(self.topology), "--host", member])
        self.processes[member] = process.start()
        process.event("ready")
        return process

    def redis(self) -> redis.Redis:
        """The pool's Redis (the default one; a Sentinel test asks its Sentinels)."""
        url = self.state if self.state.startswith("redis://") else REDIS_URL
        return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def common_port() -> int:
    """A port free on every member's address."""
    for _ in range(50):
        sockets = [socket.socket() for _ in MEMBERS]
        try:
            sockets[0].bind((MEMBERS["fe1"], 0))
            port = int(sockets[0].getsockname()[1])
            for s, address in zip(sockets[1:], list(MEMBERS.values())[1:], strict=True):
                s.bind((address, port))
            return port
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError("no port free on every member's address")


@contextlib.contextmanager
def pool_of_two(
    root: Path, state: str = REDIS_URL, back_end: str | None = None
) -> Iterator[PoolDeployment]:
    """Provision and start fe1 and fe2 with the pool state at ``state`` and the back end
    at ``back_end`` (default: a new database on the machine's PostgreSQL); stop them after."""
    database = f"conclave_pool_{uuid.uuid4().hex[:10]}"
    _peers_or_fail(database)
    url = back_end or make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(
        hide_password=False
    )
    port = common_port()  # one SIP port on every member, as DNS SRV for the pool names one
    ports = dict.fromkeys(MEMBERS, port)
    tag = uuid.uuid4().hex[:8]
    members = [
        {"name": name, "fqdn": f"{name}.{DOMAIN}", "address": address, "roles": ["frontend"],
         "ports": {"sip_tls": ports[name]}}
        for name, address in MEMBERS.items()
    ]  # fmt: skip
    doc = {
        "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
        "requirements": {"users": 100, "high_availability": True},
        "sites": {"hq": {}},
        "pools": {
            f"ee{tag}": {
                "site": "hq", "edition": "enterprise", "fqdn": f"pool.{DOMAIN}",
                "database": url,
                "state": state, "members": members,
            },
        },
        "policies": {"presence": {"enabled": True}, "archiving": {"mode": "internal"}},
    }  # fmt: skip
    (root / "topology.toml").write_text(dumps_toml(doc))
    conclave("topology", "provision", str(root / "topology.toml"), "--all")
    for user, password in PASSWORDS.items():
        conclave(
            "user", "add", user, "--dir", str(root / "hosts" / "fe1"), "--password-stdin",
            stdin=password + "\n",
        )  # fmt: skip
    # Debian's sipp signs MD5 only: fe1 offers MD5 alone to the harness's sipp scenarios.
    host_config = root / "hosts" / "fe1" / "conclave.toml"
    text = host_config.read_text()
    default = 'md5_only_user_agents = ["baresip v0.", "baresip v1.", "sipsak"]'
    assert default in text, "the provisioned [auth] section changed"
    host_config.write_text(text.replace(default, default[:-1] + ', "sipp-conclave-e2e"]'))
    deployment = PoolDeployment(root, ports, prefix=f"conclave:ee{tag}:", state=state)
    try:
        for member in MEMBERS:
            deployment.start(member)
        yield deployment
    finally:
        for process in deployment.processes.values():
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        with contextlib.suppress(redis.RedisError, OSError), deployment.redis() as r:
            keys = list(r.scan_iter(match=deployment.prefix + "*"))
            if keys:
                r.delete(*keys)
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolDeployment]:
    with pool_of_two(tmp_path_factory.mktemp("pool")) as deployment:
        yield deployment


def knows(process: RoleProcess, client: SipClient, user: str, member: str) -> None:
    """Wait until ``process`` has learnt that ``client`` (signed in as ``user``) is
    reachable through ``member``."""
    contact = f"sip:{user}@{client.host}:{client.local_port};transport=tls"
    process.wait_for(
        lambda e: (
            e.get("event") == "pool registrations changed"
            and e.get("aor") == f"sip:{user}@{DOMAIN}"
            and f"{member}.{DOMAIN}" in e.get("members", ())
            and contact in e.get("contacts", ())
        ),
        10,
    )


def talk(sender: SipClient, user: str, receiver: SipClient, to_user: str, text: bytes) -> int:
    """``user`` messages ``to_user`` (credentials as needed), who answers 200; the final
    status ``sender`` got."""
    send_message(sender, user, to_user, text)
    incoming = receiver.recv_request()
    assert incoming.body == text
    receiver.reply(incoming, 200)
    return sender.final().status
