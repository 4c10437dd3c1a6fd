"""A pool's back end in the topology: checks, the URL Conclave uses, Patroni's files."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from conclave.topology import check_topology, load_topology
from conclave.topology.backend import (
    PATRONI_LOOP_WAIT,
    PATRONI_RETRY_TIMEOUT,
    PATRONI_TTL,
    backend_secret,
    database_url,
    password,
    patroni_config,
    pool_database,
)
from conclave.topology.checks import errors
from conclave.topology.document import dumps_toml

from .test_provision import base, host

SERVERS = [
    {"name": "db1", "address": "10.3.0.1"},
    {"name": "db2", "address": "10.3.0.2", "port": 5433, "api_port": 8009},
]


def pool_doc(**back_end: Any) -> dict[str, Any]:
    doc = base()
    doc["pools"]["ee"] = {
        "site": "hq", "edition": "enterprise", "fqdn": "pool.example.test",
        "state": "redis://state.example.test:6379/0",
        "back_end": {"servers": SERVERS, "etcd": ["10.3.0.9:2379"], **back_end},
        "members": [host("ee-fe1", "10.2.0.1", ["frontend"]),
                    host("ee-fe2", "10.2.0.2", ["frontend"])],
    }  # fmt: skip
    return doc


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(dumps_toml(doc))
    return path


def test_the_url_names_every_server_and_asks_for_the_writable_one(tmp_path: Path) -> None:
    path = write(tmp_path, pool_doc())
    topology = load_topology(path)
    assert not errors(check_topology(topology))
    url = pool_database(topology, "ee", path)
    secret = backend_secret(path, "ee")
    assert url == (
        f"postgresql://conclave:{password(secret, 'owner')}@/conclave"
        "?host=10.3.0.1:5432&host=10.3.0.2:5433&target_session_attrs=read-write"
    )
    assert pool_database(topology, "ee", path) == url  # the secret is made once, then kept
    assert stat.S_IMODE((tmp_path / "backend-ee.secret").stat().st_mode) == 0o600
    back_end = topology.pools["ee"].back_end
    assert back_end is not None
    assert ":" not in database_url(back_end, None).split("@")[0].removeprefix("postgresql://")


def test_patroni_s_configuration(tmp_path: Path) -> None:
    path = write(tmp_path, pool_doc())
    topology = load_topology(path)
    secret = backend_secret(path, "ee")
    text = patroni_config(topology, "ee", "db2", secret, "/etc/patroni")
    assert text.startswith("# Patroni for PostgreSQL server db2 of pool ee")
    doc = json.loads(text[text.index("{") :])
    assert doc["scope"] == "conclave-ee" and doc["name"] == "db2"
    assert doc["restapi"]["listen"] == "10.3.0.2:8009"
    assert doc["postgresql"]["listen"] == "10.3.0.2:5433"
    assert doc["etcd3"]["hosts"] == ["10.3.0.9:2379"]
    dcs = doc["bootstrap"]["dcs"]
    assert dcs["synchronous_mode"] is True
    assert (dcs["ttl"], dcs["loop_wait"], dcs["retry_timeout"]) == (
        PATRONI_TTL, PATRONI_LOOP_WAIT, PATRONI_RETRY_TIMEOUT,
    )  # fmt: skip
    assert PATRONI_TTL >= PATRONI_LOOP_WAIT + 2 * PATRONI_RETRY_TIMEOUT  # Patroni's rule
    hba = doc["postgresql"]["pg_hba"]
    # Each Front End of the pool may reach the database as its owner, with a password;
    # replication only from the servers; nothing is trusted without a password.
    assert "host conclave conclave 10.2.0.1/32 scram-sha-256" in hba
    assert "host conclave conclave 10.2.0.2/32 scram-sha-256" in hba
    assert "host replication replicator 10.3.0.1/32 scram-sha-256" in hba
    assert not any("trust" in line for line in hba)
    assert doc["bootstrap"]["post_bootstrap"] == "/etc/patroni/patroni-ee-post-bootstrap.sh"


def test_checks_refuse_what_cannot_work(tmp_path: Path) -> None:
    def problems(doc: dict[str, Any]) -> str:
        return " ".join(str(p) for p in errors(check_topology(load_topology(write(tmp_path, doc)))))

    one = pool_doc(servers=SERVERS[:1])
    assert "a synchronous back end needs a standby" in problems(one)
    no_etcd = pool_doc(etcd=[])
    assert "etcd" in problems(no_etcd)
    both = pool_doc()
    both["pools"]["ee"]["database"] = "postgresql://conclave@db/conclave"
    assert "not both" in problems(both)
    manual = pool_doc(failover="manual", etcd=[])
    assert problems(manual) == ""
