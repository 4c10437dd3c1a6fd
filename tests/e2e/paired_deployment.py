"""Two paired Enterprise pools on loopback, from one topology document.

Pool ee1 (site hq, members fe-a1, fe-a2, … on 127.0.5.x) homes alice and carol; pool
ee2 (site dr, fe-b1, … on 127.0.6.x) homes bob. Each pool has its own back end (ee1's
may be a replicated PostgreSQL, :mod:`.postgres_cluster`) and its own Redis key prefix.
ee1 fails over to ee2 automatically after :data:`FAILOVER_AFTER` seconds of silence.
fe-b1 runs the admin listener (``/metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from sqlalchemy.engine import make_url

from conclave.topology.document import dumps_toml

from .edge_deployment import DOMAIN, PASSWORDS
from .pool_deployment import REDIS_URL, _peers_or_fail, common_port
from .server import conclave
from .sipclient import SipClient
from .test_roles import POSTGRES_ADMIN_URL, RoleProcess, _admin, free_ports

FAILOVER_AFTER = 5
HOMES = {"alice": "ee1", "carol": "ee1", "bob": "ee2"}


@dataclass
class Paired:
    root: Path
    addresses: dict[str, str]
    """Host name -> its address."""
    sip_ports: dict[str, int]
    pairing_ports: dict[str, int]
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def topology(self) -> Path:
        return self.root / "topology.toml"

    def members(self, pool: str) -> list[str]:
        prefix = "fe-a" if pool == "ee1" else "fe-b"
        return [h for h in self.addresses if h.startswith(prefix)]

    def start(self, host: str) -> RoleProcess:
        process = RoleProcess(["serve", "--topology", str(self.topology), "--host", host])
        self.processes[host] = process.start()
        process.event("ready")
        return process

    def client(self, host: str, source: str) -> SipClient:
        return SipClient(
            "tls", self.sip_ports[host], domain=DOMAIN, ca=str(self.root / "ca" / "ca.crt"),
            host=source, server=self.addresses[host], server_name=f"{host}.{DOMAIN}",
        )  # fmt: skip

    def contacts(self, host: str, user: str) -> list[str]:
        out = conclave("contacts", "list", user, "--dir", str(self.root / "hosts" / host)).stdout
        return sorted(line.split("\t")[-1] for line in out.splitlines() if "\tsip:" in line)

    def status(self) -> dict[str, dict[str, Any]]:
        out = conclave("pool", "status", "--topology", str(self.topology), "--json").stdout
        return {entry["pool"]: entry for entry in json.loads(out)}


@contextlib.contextmanager
def paired_pools(
    root: Path, *, members: int = 1, ee1_back_end: str | None = None
) -> Iterator[Paired]:
    databases = {pool: f"conclave_pair_{pool}_{uuid.uuid4().hex[:8]}" for pool in ("ee1", "ee2")}
    for database in databases.values():
        _peers_or_fail(database)
    urls = {
        pool: make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        for pool, name in databases.items()
    }
    if ee1_back_end is not None:
        urls["ee1"] = ee1_back_end
    addresses = {f"fe-a{i}": f"127.0.5.{i}" for i in range(1, members + 1)} | {
        f"fe-b{i}": f"127.0.6.{i}" for i in range(1, members + 1)
    }
    sip = {pool: common_port() for pool in ("ee1", "ee2")}
    pairing = dict(zip(addresses, free_ports(len(addresses)), strict=True))
    (admin,) = free_ports(1)
    tag = uuid.uuid4().hex[:6]

    def pool(name: str, site: str, partner: str) -> dict[str, Any]:
        prefix = "fe-a" if name == "ee1" else "fe-b"
        hosts = [
            {"name": host, "fqdn": f"{host}.{DOMAIN}", "address": address,
             "roles": ["frontend"], "ports": {"sip_tls": sip[name], "pairing_tls": pairing[host]}}
            | ({"admin": f"127.0.0.1:{admin}"} if host == "fe-b1" else {})
            for host, address in addresses.items() if host.startswith(prefix)
        ]  # fmt: skip
        return {
            "site": site, "edition": "enterprise", "fqdn": f"{name}.{DOMAIN}",
            "database": urls[name], "state": REDIS_URL, "state_prefix": f"test:{tag}:{name}:",
            "paired_with": partner,
            "failover": "automatic", "failover_after": FAILOVER_AFTER, "members": hosts,
        }  # fmt: skip

    doc = {
        "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
        "requirements": {"users": 100, "high_availability": True},
        "sites": {"hq": {}, "dr": {}},
        "pools": {"ee1": pool("ee1", "hq", "ee2"), "ee2": pool("ee2", "dr", "ee1")},
    }  # fmt: skip
    (root / "topology.toml").write_text(dumps_toml(doc))
    conclave("topology", "provision", str(root / "topology.toml"), "--all")
    for user, home in HOMES.items():
        host = "fe-a1" if home == "ee1" else "fe-b1"
        conclave("user", "add", user, "--dir", str(root / "hosts" / host), "--password-stdin",
                 stdin=PASSWORDS[user] + "\n")  # fmt: skip
    conclave(
        "contacts", "add", "alice", f"sip:carol@{DOMAIN}", "--dir", str(root / "hosts" / "fe-a1")
    )
    deployment = Paired(root, addresses, {h: sip[p] for h, p in _pools(addresses).items()},
                        pairing)  # fmt: skip
    try:
        for host in addresses:
            deployment.start(host)
        yield deployment
    finally:
        for process in deployment.processes.values():
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        with contextlib.suppress(redis.RedisError, OSError), redis.Redis.from_url(REDIS_URL) as r:
            keys = list(r.scan_iter(match=f"test:{tag}:*"))
            if keys:
                r.delete(*keys)
        for database in databases.values():
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def _pools(addresses: dict[str, str]) -> dict[str, str]:
    return {host: "ee1" if host.startswith("fe-a") else "ee2" for host in addresses}
