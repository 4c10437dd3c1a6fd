"""Paired pools: the backup service copies each pool's users to its partner over mutual
TLS, the partner takes them over when the pool dies, and failback brings them home.

Pool ee1 (site hq, fe-a on 127.0.5.1) homes alice and carol; pool ee2 (site dr, fe-b on
127.0.6.1) homes bob. ee1 fails over automatically after 5 s of silence. fe-a is
killed; fe-b takes alice over from its copy, alice signs in at ee2 with her contact
list and messages bob; what she changes there comes home with failback. The manual
commands (`conclave pool failover|failback|status`) are driven too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from conclave.topology.document import dumps_toml

from .edge_deployment import DOMAIN, PASSWORDS, send_message, sign_in
from .pool_deployment import REDIS_URL, _admin, _peers_or_fail
from .server import conclave
from .sipclient import SipClient
from .test_metrics import admin_port, scrape
from .test_roles import POSTGRES_ADMIN_URL, RoleProcess, free_ports

HOSTS = {"fe-a": ("ee1", "127.0.5.1"), "fe-b": ("ee2", "127.0.6.1")}
FAILOVER_AFTER = 5


@dataclass
class Paired:
    root: Path
    ports: dict[str, int]
    processes: dict[str, RoleProcess] = field(default_factory=dict)

    @property
    def topology(self) -> Path:
        return self.root / "topology.toml"

    def start(self, host: str) -> RoleProcess:
        process = RoleProcess(["serve", "--topology", str(self.topology), "--host", host])
        self.processes[host] = process.start()
        process.event("ready")
        return process

    def client(self, host: str, source: str) -> SipClient:
        return SipClient(
            "tls", self.ports[host], domain=DOMAIN, ca=str(self.root / "ca" / "ca.crt"),
            host=source, server=HOSTS[host][1], server_name=f"{host}.{DOMAIN}",
        )  # fmt: skip

    def contacts(self, host: str, user: str) -> list[str]:
        out = conclave("contacts", "list", user, "--dir", str(self.root / "hosts" / host)).stdout
        return sorted(line.split("\t")[-1] for line in out.splitlines() if "\tsip:" in line)


@pytest.fixture(scope="module")
def paired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paired]:
    databases = {pool: f"conclave_pair_{pool}_{uuid.uuid4().hex[:8]}" for pool in ("ee1", "ee2")}
    for database in databases.values():
        _peers_or_fail(database)
    root = tmp_path_factory.mktemp("paired")
    sip_a, sip_b, pair_a, pair_b, admin_b = free_ports(5)

    def pool(name: str, site: str, host: str, sip: int, pairing: int, partner: str) -> dict:
        url = make_url(POSTGRES_ADMIN_URL).set(database=databases[name])
        extra = {"admin": f"127.0.0.1:{admin_b}"} if host == "fe-b" else {}
        return {
            "site": site, "edition": "enterprise", "fqdn": f"{name}.{DOMAIN}",
            "database": url.render_as_string(hide_password=False),
            "state": REDIS_URL, "paired_with": partner, "failover": "automatic",
            "failover_after": FAILOVER_AFTER,
            "members": [{"name": host, "fqdn": f"{host}.{DOMAIN}", "address": HOSTS[host][1],
                         "roles": ["frontend"], "ports": {"sip_tls": sip, "pairing_tls": pairing},
                         **extra}],
        }  # fmt: skip

    doc = {
        "organisation": {"name": "Example Ltd", "sip_domains": [DOMAIN]},
        "requirements": {"users": 100, "high_availability": True},
        "sites": {"hq": {}, "dr": {}},
        "pools": {
            "ee1": pool("ee1", "hq", "fe-a", sip_a, pair_a, "ee2"),
            "ee2": pool("ee2", "dr", "fe-b", sip_b, pair_b, "ee1"),
        },
    }
    (root / "topology.toml").write_text(dumps_toml(doc))
    conclave("topology", "provision", str(root / "topology.toml"), "--all")
    for user, host in (("alice", "fe-a"), ("carol", "fe-a"), ("bob", "fe-b")):
        conclave("user", "add", user, "--dir", str(root / "hosts" / host), "--password-stdin",
                 stdin=PASSWORDS[user] + "\n")  # fmt: skip
    conclave(
        "contacts", "add", "alice", f"sip:carol@{DOMAIN}", "--dir", str(root / "hosts" / "fe-a")
    )
    deployment = Paired(root, {"fe-a": sip_a, "fe-b": sip_b})
    try:
        for host in HOSTS:
            deployment.start(host)
        yield deployment
    finally:
        for process in deployment.processes.values():
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        for database in databases.values():
            asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def talk(sender: SipClient, user: str, receiver: SipClient, to_user: str, text: bytes) -> None:
    send_message(sender, user, to_user, text)
    incoming = receiver.recv_request()
    assert incoming.body == text
    receiver.reply(incoming, 200)
    assert sender.final().status == 200


def status(paired: Paired) -> dict[str, dict]:
    out = conclave("pool", "status", "--topology", str(paired.topology), "--json").stdout
    return {entry["pool"]: entry for entry in json.loads(out)}


def test_a_failed_pool_s_users_carry_on_at_its_partner_and_come_home(paired: Paired) -> None:
    fe_a, fe_b = paired.processes["fe-a"], paired.processes["fe-b"]
    copied = fe_b.wait_for(
        lambda e: e.get("event") == "pool backup received" and e.get("pool") == "ee1", 20
    )
    assert copied["users"] == 2
    port = admin_port(fe_b)
    lag = scrape(port).get(("conclave_pairing_replication_lag_seconds", (("pool", "ee1"),)))
    assert lag is not None and 0 <= lag < 30, lag
    assert status(paired)["ee2"]["partner_copy"]["users"] == 2

    bob = paired.client("fe-b", "127.0.0.71")
    assert sign_in(bob, "bob").status == 200
    os.kill(fe_a.pid, signal.SIGKILL)  # the whole of pool ee1
    killed = time.monotonic()
    taken = fe_b.wait_for(lambda e: e.get("event") == "pool failover", 30)
    assert taken["pool"] == "ee1" and taken["users"] == 2 and taken["trigger"] == "automatic"
    fe_b.wait_for(
        lambda e: e.get("event") == "users reloaded" and e.get("time", "") > taken["time"], 15
    )
    alice = paired.client("fe-b", "127.0.0.72")
    assert sign_in(alice, "alice").status == 200  # at the partner, her password as ever
    talk(alice, "alice", bob, "bob", b"from the partner pool")
    served_again = time.monotonic() - killed
    print(f"alice served at the partner {served_again:.1f} s after her pool was killed")
    assert paired.contacts("fe-b", "alice") == [f"sip:carol@{DOMAIN}"]  # her list came along
    conclave("contacts", "add", "alice", f"sip:bob@{DOMAIN}",
             "--dir", str(paired.root / "hosts" / "fe-b"))  # fmt: skip
    assert "ee1" in status(paired)["ee2"]["serving_for"]

    fe_a = paired.start("fe-a")  # ee1 is back: its users go home with what they changed
    out = conclave("pool", "failback", "ee1", "--topology", str(paired.topology)).stdout
    assert "2 users served at home again" in out
    assert paired.contacts("fe-a", "alice") == [f"sip:bob@{DOMAIN}", f"sip:carol@{DOMAIN}"]
    fe_a.wait_for(
        lambda e: e.get("event") == "users reloaded" and e.get("trigger") != "startup", 15
    )
    home = paired.client("fe-a", "127.0.0.73")
    assert sign_in(home, "alice").status == 200
    assert status(paired)["ee2"]["serving_for"] == {}


def test_manual_failover_and_its_refusals(paired: Paired) -> None:
    topology = str(paired.topology)
    out = conclave("pool", "failover", "ee1", "--topology", topology).stdout
    assert "failed over to ee2: 2 users" in out
    again = conclave("pool", "failover", "ee1", "--topology", topology, check=False)
    assert again.returncode == 1 and "already" in again.stderr and "Traceback" not in again.stderr
    conclave("pool", "failback", "ee1", "--topology", topology)
    twice = conclave("pool", "failback", "ee1", "--topology", topology, check=False)
    assert twice.returncode == 1 and "has not failed over" in twice.stderr
    unknown = conclave("pool", "failover", "nowhere", "--topology", topology, check=False)
    assert unknown.returncode == 1 and "no Enterprise Front End pool" in unknown.stderr
