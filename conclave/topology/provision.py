"""A host's data directory, made from the topology.

``conclave topology provision FILE --host NAME`` makes (or brings up to date)
the data directory of one host (default ``hosts/NAME`` beside the topology,
see :mod:`.layout`):

1. the organisation's CA, made on first use in ``[files] ca``; its private
   key stays there and is never copied to a host;
2. ``conclave.toml``: the settings the topology owns (:func:`host_settings`)
   over the defaults, or over the file already there (other keys are kept);
3. ``ca/ca.crt`` and ``ca/crl.pem``: copies of the CA's certificate and CRL;
4. ``tls/server.crt`` and ``.key``: the host's internal certificate
   (:func:`conclave.topology.certs.internal_names`), issued again when
   missing, not covering every name, or expiring within 30 days. Hosts hold
   no CA key, so ``[tls] auto_renew`` is off: provisioning again renews;
5. the database: the embedded SQLite file of a Standard Edition server, or
   the Enterprise pool's PostgreSQL back end, migrated to the current schema.

``conclave serve --topology FILE --host NAME`` applies :func:`host_settings`
again on start, so the topology stays the single source of those settings.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conclave.config import Config, config_from_mapping, load_config, write_config
from conclave.pki import (
    CertificateAuthority,
    PkiError,
    create_ca,
    describe,
    load_ca,
    load_certificate,
    load_certificates,
)
from conclave.pki.files import write_private_file
from conclave.pki.validate import uncovered
from conclave.store.database import migrate
from conclave.workers import endpoint_of as _endpoint_of
from conclave.workers import member_name

from .backend import pool_database
from .catalogue import AVAILABLE_ROLES, logging_controller_for
from .certs import external_names, internal_names
from .layout import ca_dir, host_dir
from .model import HostRef, Topology
from .relay import relay_secret, relay_servers

RENEW_WITHIN = dt.timedelta(days=30)
"""A provisioned certificate this close to expiry is issued again."""

Settings = dict[str, dict[str, Any]]


def host_settings(topology: Topology, ref: HostRef, topology_path: Path | None = None) -> Settings:
    """The ``conclave.toml`` keys the topology owns for this host, by section."""
    host, pool, policies = ref.host, ref.pool, topology.policies
    archiving = policies.archiving
    settings: Settings = {
        "server": {"domain": topology.domain, "host": host.fqdn},
        "transports": {
            "tls": "tls" in pool.transports,
            "tcp": "tcp" in pool.transports,
            "udp": "udp" in pool.transports,
            "ws": pool.web and "frontend" in host.roles,
            "bind": host.address,
            "tls_port": host.ports.sip_tls,
            "sip_port": host.ports.sip,
        },
        "tls": {"auto_renew": False},
        "presence": {
            "enabled": policies.presence.enabled,
            "external_watchers": policies.presence.external_watchers,
        },
        "admin": {"enabled": bool(host.admin)},
        "archive": {
            "enabled": archiving.mode != "off",
            "internal": archiving.mode in ("internal", "all"),
            "federated": archiving.mode in ("federated", "all"),
            "critical": archiving.critical,
            "site": pool.site,
            "pool": ref.pool_name,
        },
        "logging": {"controller": "", "controller_name": ""},
    }
    if host.admin:
        settings["admin"]["bind"] = host.admin
        console = host.console and "frontend" in host.roles
        settings["admin"]["console"] = console
        settings["admin"]["admins"] = list(policies.administrators) if console else []
    if "frontend" in host.roles:  # the web face (docs/web.md): on the host's address
        address = f"[{host.address}]" if ":" in host.address else host.address
        settings["web"] = {
            "enabled": pool.web,
            "bind": f"{address}:{host.ports.web_https}",
            "crl_bind": f"{address}:{host.ports.web_crl}",
        }
    if policies.lockout is not None:
        settings["limits"] = {
            "auth_failures_per_minute": policies.lockout.threshold,
            "ban_seconds": policies.lockout.duration,
        }
        settings["lockout"] = {
            "threshold": policies.lockout.threshold,
            "window": policies.lockout.duration,
            "duration": policies.lockout.duration,
            "internal_networks": list(policies.lockout.internal_networks),
            "directory_threshold": policies.lockout.directory_threshold,
        }
    servers = relay_servers(topology)
    if "frontend" in host.roles:  # the Front Ends hand out the edges' relay credentials
        settings["media_relay"] = {"enabled": bool(servers), "servers": list(servers)}
    if pool.edition == "enterprise" and (pool.database or pool.back_end):
        settings["database"] = {"url": pool_database(topology, ref.pool_name, topology_path)}
    if "frontend" in host.roles:
        settings["pool"] = pool_settings(ref)
        settings["pairing"] = pairing_settings(topology, ref)
    controller = logging_controller_for(ref, topology)
    if controller is not None:
        address = controller.host.address
        address = f"[{address}]" if ":" in address else address
        settings["logging"] = {
            "controller": f"{address}:{controller.host.ports.syslog_tls}",
            "controller_name": controller.host.fqdn,
        }
    if "logging-controller" in host.roles:
        address = f"[{host.address}]" if ":" in host.address else host.address
        settings["logging_controller"] = {"listen": f"{address}:{host.ports.syslog_tls}"}
    edges = [r for r in topology.hosts() if r.edge_internal is not None]
    directors = [r for r in topology.hosts() if "director" in r.host.roles]
    if {"frontend", "director"} & set(host.roles):
        settings["trust"] = {
            "edges": [e.edge_internal.fqdn for e in edges if e.edge_internal is not None],
            "addresses": [e.edge_internal.address for e in edges if e.edge_internal is not None],
            "edge_endpoints": [
                _endpoint_of(e.edge_internal.address, e.host.ports.edge_internal_tls)
                for e in edges
                if e.edge_internal is not None
            ],
            "directors": [d.host.fqdn for d in directors],
            "director_addresses": [d.host.address for d in directors],
        }
    if "director" in host.roles:
        settings["director"] = {
            "bind": host.address,
            "port": host.ports.director_tls,
            "pools": [
                {
                    "name": name, "database": pool_database(topology, name, topology_path),
                    "next_hop": _endpoint_of(first.address, first.ports.sip_tls),
                    "next_hop_name": pool.fqdn or first.fqdn,
                }
                for name, pool in topology.pools.items()
                for first in pool.members[:1]
                if (pool.database or pool.back_end)
                and any("frontend" in m.roles for m in pool.members)
            ],
        }  # fmt: skip
    if "frontend" in host.roles:
        first = edges[0].edge_internal if edges else None
        federation = policies.federation.enabled and first is not None
        settings["federation"] = {"enabled": federation, "edge": "", "edge_name": ""}
        if federation and first is not None:
            address = f"[{first.address}]" if ":" in first.address else first.address
            settings["federation"] |= {
                "edge": f"{address}:{edges[0].host.ports.edge_internal_tls}",
                "edge_name": first.fqdn,
            }
    if "edge" in host.roles:
        settings["edge"] = edge_settings(topology, ref)
    return settings


def pool_settings(ref: HostRef) -> dict[str, Any]:
    """A Front End's ``[pool]``: the shared state and the other members (docs/pools.md)."""
    pool, host = ref.pool, ref.host
    if not pool.state:
        return {"redis": "", "members": [], "member_endpoints": [], "member_names": [],
                "workers": host.workers, "worker_port": host.ports.worker_tls}  # fmt: skip
    members: list[str] = []
    endpoints: list[str] = []
    names: list[str] = []
    for other in pool.members:
        if other.name == host.name or "frontend" not in other.roles:
            continue
        if other.workers == 1:  # one process: its SIP port takes the pool's relays
            members.append(other.fqdn)
            endpoints.append(_endpoint_of(other.address, other.ports.sip_tls))
            names.append(other.fqdn)
            continue
        for index in range(other.workers):  # each worker on its own relay port
            members.append(other.fqdn)
            endpoints.append(_endpoint_of(other.address, other.ports.worker_tls + index))
            names.append(member_name(other.fqdn, index))
    return {
        "redis": pool.state,
        "key_prefix": pool.state_prefix or f"conclave:{ref.pool_name}:",
        "members": members,
        "member_endpoints": endpoints,
        "member_names": names if names != members else [],
        "workers": host.workers,
        "worker_port": host.ports.worker_tls,
    }


def pairing_settings(topology: Topology, ref: HostRef) -> dict[str, Any]:
    """A Front End's ``[pairing]``: its partner pool's members (docs/pools.md)."""
    pool = ref.pool
    partner = topology.pools.get(pool.paired_with) if pool.paired_with else None
    if partner is None or pool.edition != "enterprise":
        return {"partner": "", "pool": "", "listen": "", "partner_members": [],
                "partner_endpoints": []}  # fmt: skip
    members = [m for m in partner.members if "frontend" in m.roles]
    return {
        "partner": pool.paired_with,
        "pool": ref.pool_name,
        "listen": _endpoint_of(ref.host.address, ref.host.ports.pairing_tls),
        "partner_members": [m.fqdn for m in members],
        "partner_endpoints": [_endpoint_of(m.address, m.ports.pairing_tls) for m in members],
        "failover": partner.failover,
        "failover_after": partner.failover_after,
    }


def remote_users_pool(topology: Topology) -> HostRef | None:
    """Where the Edge relays remote users: the first Director, which authenticates them and
    sends each to their home pool; without one, the first Front End pool's first member."""
    hosts = topology.hosts()
    director = next((r for r in hosts if "director" in r.host.roles), None)
    return director or next((r for r in hosts if "frontend" in r.host.roles), None)


def edge_settings(topology: Topology, ref: HostRef) -> dict[str, Any]:
    """``[edge]``: both interfaces, the next hop inside, who may connect from inside."""
    internal, external = ref.edge_internal, ref.edge_external
    hop = remote_users_pool(topology)
    values: dict[str, Any] = {
        "remote_users": topology.policies.external_access.remote_users,
        "domains": list(topology.organisation.sip_domains),
        "access_port": ref.host.ports.edge_access_tls,
        "internal_port": ref.host.ports.edge_internal_tls,
        "inside_peers": [
            r.host.fqdn for r in topology.hosts() if {"frontend", "director"} & set(r.host.roles)
        ],
    }
    if internal is not None:
        values |= {"internal_name": internal.fqdn, "internal_bind": internal.address}
    if external is not None:
        values |= {"external_name": external.fqdn, "external_bind": external.address}
    if hop is not None:
        port = hop.host.ports.director_tls if "director" in hop.roles else hop.host.ports.sip_tls
        values |= {
            "next_hop": _endpoint_of(hop.host.address, port),
            "next_hop_name": hop.pool_fqdn,
        }
    federation = topology.policies.federation
    values |= {
        "federation": federation.enabled,
        "federation_port": ref.host.ports.edge_federation_tls,
        "allow": list(federation.allow),
        "block": list(federation.block),
        "open": federation.open,
        "discovery": federation.partner_discovery,
        "discovery_ca": DISCOVERY_CA_FILE if federation.discovery_ca else "",
        "nameservers": list(federation.nameservers),
        "private_addresses": federation.private_addresses,
        "partners": [
            {
                "domain": p.domain, "edge": p.edge or "", "port": p.port,
                "ca": partner_ca_file(p.domain) if p.ca else "",
                "presence": p.presence, "rate": p.rate,
            }
            for p in federation.partners
        ],
    }  # fmt: skip
    return values


DISCOVERY_CA_FILE = "partners/discovery.pem"
"""Where an Edge keeps the CAs that certify discovered partners (provision copies it)."""


def partner_ca_file(domain: str) -> str:
    """Where an Edge's data directory keeps a partner's CA bundle (provision copies it)."""
    return f"partners/{domain.lower()}.pem"


def apply_settings(config: Config | None, settings: Settings, *, source: str) -> Config:
    """``config`` (or the defaults) with ``settings`` laid over it, validated again."""
    data: dict[str, Any] = config.model_dump(mode="python") if config is not None else {}
    for section, values in settings.items():
        data[section] = {**data.get(section, {}), **values}
    return config_from_mapping(data, source=source)


def differences(before: Config, after: Config) -> list[str]:
    """``section.key`` of every setting that differs between two configs."""
    a, b = before.model_dump(mode="json"), after.model_dump(mode="json")
    return [
        f"{section}.{key}"
        for section in b
        for key in b[section]
        if a.get(section, {}).get(key) != b[section][key]
    ]


@dataclass
class Provisioned:
    """What :func:`provision` did for one host."""

    host: str
    data_dir: Path
    actions: list[str] = field(default_factory=list)
    skipped: str = ""
    """why nothing was done (the host runs only roles that are not available yet)"""


def provision(
    topology: Topology,
    topology_path: Path,
    ref: HostRef,
    *,
    data_dir: Path | None = None,
    now: dt.datetime | None = None,
) -> Provisioned:
    """Make or update the host's data directory (see the module docstring).

    Raises :class:`PkiError`, :class:`conclave.config.ConfigError` or
    :class:`conclave.store.errors.StoreError` with a one-line message.
    """
    now = now or dt.datetime.now(dt.UTC)
    target = data_dir or host_dir(topology_path, topology, ref.name)
    result = Provisioned(ref.name, target)
    if not set(ref.host.roles) & AVAILABLE_ROLES:
        result.skipped = (
            f"its roles ({', '.join(ref.host.roles)}) are not available yet: "
            "nothing to run, nothing provisioned"
        )
        return result
    org_ca = ca_dir(topology_path, topology)
    own_key = target / "ca" / "ca.key"
    if own_key.exists() and own_key.resolve() != (org_ca / "ca.key").resolve():
        raise PkiError(
            f"{target} holds its own CA ({own_key}): provision a new data directory, "
            "the organisation's CA issues the host certificates"
        )
    target.mkdir(parents=True, exist_ok=True)
    os.chmod(target, 0o700)
    ca = _org_ca(topology, topology_path, result)
    existing = load_config(target) if (target / "conclave.toml").exists() else None
    settings = host_settings(topology, ref, topology_path)
    config = apply_settings(existing, settings, source=str(target))
    if existing is None or differences(existing, config):
        write_config(target, config)
        result.actions.append(
            "wrote conclave.toml" if existing is None else "updated conclave.toml"
        )
    ca_copy = config.path(target, config.tls.ca)
    ca_copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ca.cert_path, ca_copy)
    ca.publish_crl(now)
    shutil.copyfile(ca.crl_path, config.path(target, config.tls.crl))
    result.actions.append("copied the CA certificate and a fresh CRL")
    _certificate(ca, config, target, internal_names(ref, topology), now, result)
    if "edge" in ref.host.roles:
        _external_certificate(ca, config, target, external_names(ref, topology), now, result)
        _partner_cas(topology, topology_path, target, result)
    if config.media_relay.enabled:
        secret = relay_secret(topology_path).encode("ascii") + b"\n"
        write_private_file(config.path(target, config.media_relay.secret_file), secret)
        result.actions.append("wrote the media relay secret shared with the edges")
    if "frontend" in ref.host.roles:
        url = config.database_url(target)
        migrate(url)
        result.actions.append(
            f"migrated the database ({'SQLite' if url.startswith('sqlite') else 'PostgreSQL'})"
        )
    return result


def _org_ca(topology: Topology, topology_path: Path, result: Provisioned) -> CertificateAuthority:
    directory = ca_dir(topology_path, topology)
    if not (directory / "ca.crt").exists():
        create_ca(directory, common_name=f"Conclave CA for {topology.organisation.name}")
        result.actions.append(f"created the organisation's CA in {directory}")
    return load_ca(directory)


def _renewal_reason(cert_path: Path, names: tuple[str, ...], now: dt.datetime) -> str:
    """Why the host certificate must be issued again; empty when it is fine."""
    try:
        info = describe(load_certificate(cert_path))
    except PkiError:
        return "unreadable"
    missing = uncovered(info, names)
    if missing:
        return f"not covering {', '.join(missing)}"
    if info.expires_within(now, RENEW_WITHIN):
        return "expiring"
    return ""


def _certificate(
    ca: CertificateAuthority,
    config: Config,
    target: Path,
    names: tuple[str, ...],
    now: dt.datetime,
    result: Provisioned,
) -> None:
    cert_path = config.path(target, config.tls.cert)
    key_path = config.path(target, config.tls.key)
    reason = _issue_if_needed(ca, cert_path, key_path, names, now)
    if reason:
        result.actions.append(f"issued the host certificate ({reason} before): {', '.join(names)}")


def _issue_if_needed(
    ca: CertificateAuthority,
    cert_path: Path,
    key_path: Path,
    names: tuple[str, ...],
    now: dt.datetime,
) -> str:
    """Issue a server certificate for ``names`` unless a good one is there; why, if issued."""
    if cert_path.exists() and key_path.exists():
        reason = _renewal_reason(cert_path, names, now)
    else:
        reason = "missing"
    if reason and names:
        ca.issue_server(list(names)).write(cert_path, key_path)
        return reason
    return ""


def _partner_cas(
    topology: Topology, topology_path: Path, target: Path, result: Provisioned
) -> None:
    """Copy each partner's CA bundle into the Edge's data directory (it may be elsewhere)."""
    federation = topology.policies.federation
    bundles = [(p.domain, p.ca, partner_ca_file(p.domain)) for p in federation.partners if p.ca]
    if federation.partner_discovery and federation.discovery_ca:
        bundles.append(("discovered partners", federation.discovery_ca, DISCOVERY_CA_FILE))
    for domain, relative, copy in bundles:
        source = (Path(topology_path).parent / relative).resolve()
        try:
            certificates = load_certificates(source)
        except PkiError as exc:
            raise PkiError(f"partner {domain}: {exc}") from None
        destination = target / copy
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        result.actions.append(f"copied {len(certificates)} CA certificate(s) of {domain}")


def _external_certificate(
    ca: CertificateAuthority,
    config: Config,
    target: Path,
    names: tuple[str, ...],
    now: dt.datetime,
    result: Provisioned,
) -> None:
    """The Edge's external certificate. Without one from a public CA in place, the
    organisation's CA issues it: enough for clients that trust that CA (a lab, managed
    devices); the audit says a public one is needed for partners (docs/edge.md)."""
    cert_path = config.path(target, config.edge.external_cert)
    key_path = config.path(target, config.edge.external_key)
    reason = _issue_if_needed(ca, cert_path, key_path, names, now)
    if reason:
        result.actions.append(
            f"issued the external certificate from the organisation's CA ({reason} before): "
            + ", ".join(names)
        )


def topology_owned(
    config: Config,
    topology: Topology,
    ref: HostRef,
    *,
    source: str,
    topology_path: Path | None = None,
) -> Config:
    """``config`` with the topology's settings for the host applied (used by ``serve``)."""
    return apply_settings(config, host_settings(topology, ref, topology_path), source=source)


__all__ = [
    "Provisioned",
    "apply_settings",
    "differences",
    "host_settings",
    "provision",
    "topology_owned",
]
