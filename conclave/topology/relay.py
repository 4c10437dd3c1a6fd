"""The edge's media relay: coturn's configuration, and the secret it shares with Front Ends.

An edge in use (remote users or federation) relays media with coturn.
``conclave topology publish --output DIR`` writes ``turnserver-EDGE.conf``
for each such edge, and ``conclave topology provision`` gives every Front End
the relays and the same secret (``[media_relay]``), so the credentials a
Front End issues (:mod:`conclave.services.relay`) are the ones coturn checks.

The configuration is restrictive by default:

* ``use-auth-secret``: only time-limited credentials signed with the secret
  (coturn's TURN REST scheme), no static users, no anonymous allocations;
* no relaying to loopback (coturn's default: ``allow-loopback-peers`` is not
  set), private, link-local, carrier-grade NAT or multicast addresses
  (``denied-peer-ip``, ``no-multicast-peers``): the relay is not a way into
  the perimeter or internal network;
* listens and relays on the edge's external address only, with per-user
  and total allocation quotas, and no telnet CLI.

The secret lives beside the topology (``relay.secret``, mode 0600), made at
the first publish; every later publish and provision reuses it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from conclave.pki.files import shared_secret

from .catalogue import RELAY_PORTS
from .layout import base_dir
from .model import HostRef, Topology

SECRET_FILE: Final = "relay.secret"
SECRET_BYTES: Final = 32
USER_QUOTA: Final = 12
"""Allocations one user may hold at once: a few calls, each with audio and video,
RTP and RTCP."""
TOTAL_QUOTA: Final = 10_000
"""Allocations the relay holds at once."""

DENIED_PEERS: Final = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "240.0.0.0-255.255.255.255",
    "::1",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)
"""Peers the relay refuses: RFC 1918 and RFC 6598 space, link-local, benchmarking,
reserved, IPv6 loopback, unique-local and link-local, and the NAT64 prefix (which
would reach the same IPv4 networks). (A range such as ``::-::ffff`` must not be
added: coturn 4.6 then refuses every IPv4 peer.)"""


def relays_in_use(topology: Topology) -> list[HostRef]:
    """Edges whose media relay runs: an external interface, and remote users or federation."""
    policies = topology.policies
    if not (policies.external_access.remote_users or policies.federation.enabled):
        return []
    return [
        ref
        for ref in topology.hosts()
        if "edge" in ref.host.roles and ref.host.edge is not None and ref.host.edge.external
    ]


def relay_servers(topology: Topology) -> tuple[str, ...]:
    """``host:port`` of every relay, as Front Ends hand them to users."""
    out = []
    for ref in relays_in_use(topology):
        assert ref.host.edge is not None and ref.host.edge.external is not None
        out.append(f"{ref.host.edge.external.fqdn}:{ref.host.ports.turn}")
    return tuple(out)


def secret_path(topology_path: Path) -> Path:
    return base_dir(topology_path) / SECRET_FILE


def relay_secret(topology_path: Path) -> str:
    """The secret shared by the relays and the Front Ends; made (0600) at first use."""
    return shared_secret(secret_path(topology_path), SECRET_BYTES)


def turnserver_conf(topology: Topology, ref: HostRef, secret: str) -> str:
    """coturn's ``turnserver.conf`` for edge ``ref``."""
    assert ref.host.edge is not None and ref.host.edge.external is not None
    external = ref.host.edge.external
    lines = [
        f"# coturn for edge {ref.name} (pool {ref.pool_name}), written by",
        "# `conclave topology publish`: publish again rather than edit.",
        "# It holds the secret shared with the Front Ends: keep it mode 0600.",
        f"listening-ip={external.address}",
        f"relay-ip={external.address}",
        f"listening-port={ref.host.ports.turn}",
        f"min-port={RELAY_PORTS[0]}",
        f"max-port={RELAY_PORTS[1]}",
        "use-auth-secret",
        f"static-auth-secret={secret}",
        f"realm={topology.domain}",
        "fingerprint",
        "no-tls",
        "no-dtls",
        "no-cli",
        "no-multicast-peers",
        f"user-quota={USER_QUOTA}",
        f"total-quota={TOTAL_QUOTA}",
        "stale-nonce=600",
        "syslog",
        "# Loopback peers are refused by coturn's default (no allow-loopback-peers).",
        *(f"denied-peer-ip={peers}" for peers in DENIED_PEERS),
    ]
    return "\n".join(lines) + "\n"
