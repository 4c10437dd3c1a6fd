"""An Enterprise pool's PostgreSQL servers, and Patroni to fail them over (docs/pools.md).

Lync mirrored a pool's Back End with a witness. Here a pool's ``back_end`` lists
its PostgreSQL servers; with ``failover = "patroni"``, ``conclave topology publish
--output DIR`` writes a Patroni configuration for each server
(``patroni-<pool>-<server>.yml``) and the script Patroni runs once the first
server is initialised (``patroni-<pool>-post-bootstrap.sh``, which makes the
pool's database and its owner). Patroni, holding its leader lock in etcd, makes
one server the primary and the others streaming standbys (one of them
synchronous with ``synchronous = true``: a commit is acknowledged only once a
standby has it), and promotes a standby when the primary is lost.

Conclave finds the primary by itself: each Front End's (and Director's)
database URL names every server with ``target_session_attrs=read-write``, so a
new connection goes to whichever accepts writes.

Passwords (the PostgreSQL superuser's, the replication user's and the pool's
database owner's) are derived from one secret made at first use beside the
topology (``backend-<pool>.secret``, mode 0600), so publishing again writes the
same files. The configurations hold them: keep them 0600 (they are written so).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from urllib.parse import quote

from conclave.pki.files import shared_secret

from .layout import base_dir
from .model import BackEnd, Pool, Topology

SECRET_BYTES = 32
PATRONI_TTL = 20
"""Seconds the leader's lock in etcd lives without renewal: how long a dead primary
goes unnoticed at most (Patroni's own default is 30)."""
PATRONI_LOOP_WAIT = 2
"""Seconds between the rounds of each Patroni (its default is 10)."""
PATRONI_RETRY_TIMEOUT = 5
"""Seconds Patroni retries etcd and PostgreSQL before it demotes itself; with the
loop wait within ttl (ttl >= loop_wait + 2 * retry_timeout), as Patroni requires."""
REPLICATION_USER = "replicator"
SUPERUSER = "postgres"


def secret_path(topology_path: Path, pool: str) -> Path:
    return base_dir(topology_path) / f"backend-{pool}.secret"


def password(secret: str, purpose: str) -> str:
    """The password for ``purpose`` (superuser, replication, owner) derived from ``secret``."""
    return hmac.new(secret.encode(), purpose.encode(), hashlib.sha256).hexdigest()[:32]


def backend_secret(topology_path: Path, pool: str) -> str:
    return shared_secret(secret_path(topology_path, pool), SECRET_BYTES)


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def database_url(back_end: BackEnd, secret: str | None) -> str:
    """The URL Conclave uses: every server, the one accepting writes chosen per connection."""
    owner = quote(back_end.user, safe="")
    credentials = owner if secret is None else f"{owner}:{password(secret, 'owner')}"
    hosts = "&".join(f"host={_hostport(s.address, s.port)}" for s in back_end.servers)
    return (
        f"postgresql://{credentials}@/{quote(back_end.database, safe='')}"
        f"?{hosts}&target_session_attrs=read-write"
    )


def pool_database(topology: Topology, name: str, topology_path: Path | None) -> str:
    """Pool ``name``'s database URL: as the topology writes it, or made from its back end."""
    pool = topology.pools[name]
    if pool.back_end is None:
        return pool.database
    secret = None if topology_path is None else backend_secret(topology_path, name)
    return database_url(pool.back_end, secret)


def _clients(topology: Topology, pool: Pool) -> list[str]:
    """Addresses that use the pool's database: its Front Ends, and every Director."""
    addresses = [m.address for m in pool.members if "frontend" in m.roles]
    addresses += [r.host.address for r in topology.hosts() if "director" in r.host.roles]
    return list(dict.fromkeys(addresses))


def _cidr(address: str) -> str:
    return f"{address}/128" if ":" in address else f"{address}/32"


def patroni_config(
    topology: Topology, name: str, server_name: str, secret: str, config_dir: str
) -> str:
    """Patroni's YAML for server ``server_name`` of pool ``name`` (JSON is YAML)."""
    pool = topology.pools[name]
    back_end = pool.back_end
    assert back_end is not None
    server = next(s for s in back_end.servers if s.name == server_name)
    others = [s for s in back_end.servers if s.name != server_name]
    owner = back_end.user
    hba = [
        f"local all {SUPERUSER} peer",
        f"host all {SUPERUSER} 127.0.0.1/32 scram-sha-256",
        *(f"host replication {REPLICATION_USER} {_cidr(s.address)} scram-sha-256"
          for s in back_end.servers),
        *(f"host all {SUPERUSER} {_cidr(s.address)} scram-sha-256" for s in others),
        *(f"host {back_end.database} {owner} {_cidr(a)} scram-sha-256"
          for a in _clients(topology, pool)),
    ]  # fmt: skip
    document = {
        "scope": f"conclave-{name}",
        "namespace": "/conclave/",
        "name": server.name,
        "log": {"level": "INFO"},
        "restapi": {
            "listen": _hostport(server.address, server.api_port),
            "connect_address": _hostport(server.address, server.api_port),
        },
        "etcd3": {"hosts": list(back_end.etcd)},
        "bootstrap": {
            "dcs": {
                "ttl": PATRONI_TTL,
                "loop_wait": PATRONI_LOOP_WAIT,
                "retry_timeout": PATRONI_RETRY_TIMEOUT,
                "maximum_lag_on_failover": 1_048_576,
                "synchronous_mode": back_end.synchronous,
                "postgresql": {
                    "use_pg_rewind": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "password_encryption": "scram-sha-256",
                    },
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"auth-local": "peer"}, "data-checksums"],
            "users": {owner: {"password": password(secret, "owner"), "options": ["login"]}},
            "post_bootstrap": f"{config_dir}/patroni-{name}-post-bootstrap.sh",
        },
        "postgresql": {
            "listen": _hostport(server.address, server.port),
            "connect_address": _hostport(server.address, server.port),
            "data_dir": f"{back_end.data_dir}/{name}-{server.name}",
            "bin_dir": back_end.bin_dir,
            "pgpass": f"{back_end.data_dir}/{name}-{server.name}.pgpass",
            "authentication": {
                "superuser": {"username": SUPERUSER, "password": password(secret, "superuser")},
                "replication": {
                    "username": REPLICATION_USER,
                    "password": password(secret, "replication"),
                },
                "rewind": {"username": SUPERUSER, "password": password(secret, "superuser")},
            },
            "parameters": {"unix_socket_directories": back_end.socket_dir},
            # A new standby copies the primary at once (not after the next spread checkpoint).
            "basebackup": [{"checkpoint": "fast"}],
            "pg_hba": hba,
        },
        "tags": {"nofailover": False, "noloadbalance": False},
    }
    header = (
        f"# Patroni for PostgreSQL server {server.name} of pool {name}, written by\n"
        "# `conclave topology publish`: publish again rather than edit. It holds the\n"
        "# pool's database passwords: keep it mode 0600. Run it as the postgres user:\n"
        f"#   patroni {config_dir}/patroni-{name}-{server.name}.yml\n"
    )
    return header + json.dumps(document, indent=2) + "\n"


def post_bootstrap_script(topology: Topology, name: str, secret: str) -> str:
    """What Patroni runs on the first server once: the pool's database and its owner
    (a login with its password). Patroni passes the connection string as the last
    argument. It holds the owner's password: keep it mode 0700."""
    back_end = topology.pools[name].back_end
    assert back_end is not None
    database, owner = back_end.database, back_end.user  # Names: letters, digits, - and _
    secret_word = password(secret, "owner")  # hex: nothing to quote
    role = f'CREATE ROLE "{owner}" LOGIN PASSWORD $$' + secret_word + "$$"
    create = f'CREATE DATABASE "{database}" OWNER "{owner}"'
    return (
        "#!/bin/sh\n"
        f"# Pool {name}'s database, made once by Patroni after initdb (conclave topology\n"
        "# publish wrote this). Conclave's own schema comes with `conclave topology provision`.\n"
        "set -e\n"
        f"psql \"$1\" -v ON_ERROR_STOP=1 -c '{role}'\n"
        f"psql \"$1\" -v ON_ERROR_STOP=1 -c '{create}'\n"
    )
