"""A Standard Edition run as ``conclave serve --workers 2`` on loopback (docs/pools.md).

The data directory is made by the real ``conclave init``; its ``[pool]`` points at
the machine's Redis under a key prefix of its own. Both workers share one TLS and
one UDP port (the kernel hands each connection or UDP sender to one of them), and
relay to each other on two consecutive ports of their own.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from conclave.workers import member_name

from .edge_deployment import PASSWORDS, sign_in
from .peers_base import free_port
from .pool_deployment import REDIS_URL
from .server import CONCLAVE, ConclaveServer
from .sipclient import SipClient

DOMAIN = "example.test"
WORKERS = 2
LOCKOUT_THRESHOLD = 3
MAX_LANDING_TRIES = 40
"""Connections tried to reach a given worker (the kernel picks by a hash of the
connection's addresses: each try is a coin toss with two workers)."""


def free_run(count: int) -> int:
    """The first of ``count`` consecutive TCP ports free on loopback right now."""
    for _ in range(100):
        base = random.randint(20_000, 60_000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise AssertionError(f"no {count} consecutive free ports")


def redis_or_fail() -> redis.Redis:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_timeout=5)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis not usable: {exc}")
        pytest.skip(f"Redis not usable: {exc}")  # outside CI only
    return client


@dataclass
class WorkersHost:
    server: ConclaveServer
    tls_port: int
    udp_port: int
    worker_port: int
    prefix: str

    @property
    def ca(self) -> str:
        return str(self.server.ca)

    def client(self, source: str = "127.0.0.1", transport: str = "tls") -> SipClient:
        port = self.tls_port if transport == "tls" else self.udp_port
        return SipClient(transport, port, domain=DOMAIN, ca=self.ca, host=source)

    def member(self, worker: int) -> str:
        return member_name("127.0.0.1", worker)

    def new_events(self, seen: int, match: Any, timeout: float = 10) -> dict[str, Any]:
        """The first log event after the first ``seen`` lines that ``match`` accepts."""
        old = {id(e) for e in self.server.lines[:seen]}
        return self.server.wait_for(lambda e: id(e) not in old and match(e), timeout)

    def sign_in_anywhere(self, user: str, source: str = "127.0.0.1") -> tuple[SipClient, int]:
        """A TLS client signed in as ``user``, and the worker the kernel gave it."""
        client = self.client(source)
        seen = len(self.server.lines)
        assert sign_in(client, user).status == 200
        event = self.new_events(
            seen, lambda e: e.get("event") == "register" and e.get("user") == user
        )
        return client, int(event["worker"])

    def sign_in_at(self, worker: int, user: str, source: str = "127.0.0.1") -> SipClient:
        """A TLS client signed in as ``user`` whose connection the kernel gave ``worker``."""
        for _ in range(MAX_LANDING_TRIES):
            client, landed = self.sign_in_anywhere(user, source)
            if landed == worker:
                return client
            client.close()
        raise AssertionError(f"no connection reached worker {worker}")

    def knows(self, worker: int, user: str, client: SipClient, holder: int) -> None:
        """Wait until ``worker`` has learnt that ``client`` is reachable through ``holder``."""
        contact = f"sip:{user}@{client.host}:{client.local_port};transport=tls"
        self.server.wait_for(
            lambda e: (
                e.get("event") == "pool registrations changed"
                and e.get("worker") == worker
                and e.get("aor") == f"sip:{user}@{DOMAIN}"
                and self.member(holder) in e.get("members", ())
                and contact in e.get("contacts", ())
            ),
            10,
        )


@contextlib.contextmanager
def workers_host(root: Path) -> Iterator[WorkersHost]:
    """Start a Standard Edition of :data:`WORKERS` workers; stop it and clear its keys."""
    state = redis_or_fail()
    prefix = f"conclave:workers{uuid.uuid4().hex[:8]}:"
    tls_port, udp_port, worker_port = free_port("tcp"), free_port("udp"), free_run(WORKERS)
    server = ConclaveServer(
        root / "data",
        domain=DOMAIN,
        transports="tls,udp",
        users=dict(PASSWORDS),
        config={
            "transports": {"tls_port": tls_port, "sip_port": udp_port},
            "pool": {"redis": REDIS_URL, "key_prefix": prefix, "workers": WORKERS,
                     "worker_port": worker_port},
            "lockout": {"threshold": LOCKOUT_THRESHOLD},
            "presence": {"enabled": True},
        },
    ).init()  # fmt: skip
    host = WorkersHost(server, tls_port, udp_port, worker_port, prefix)
    try:
        server._spawn([*CONCLAVE, "serve", "--dir", str(server.data_dir)])
        for worker in range(WORKERS):
            server.wait_for(lambda e, w=worker: e.get("event") == "ready" and e.get("worker") == w)
        yield host
    finally:
        server.stop()
        keys = list(state.scan_iter(match=prefix + "*"))
        if keys:
            state.delete(*keys)
        state.close()
