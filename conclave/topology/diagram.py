"""Drawing a topology: zones, sites, pools, hosts, roles and the links between them.

:func:`diagram` builds a Graphviz graph (the ``graphviz`` package writes DOT
source); :func:`render` runs Graphviz's ``dot`` program to turn it into SVG
or PNG. ``dot`` comes from the Debian package ``graphviz``; without it,
:class:`DiagramError` says so.

Layout: three zones left to right (internet, perimeter, internal). The
internal zone holds one box per site and, inside it, one per pool. Each host
shows its FQDN, roles and listening ports. Links: remote users and partners
to the edges; edges to their next hop (directors, else Front Ends);
directors to Front End pools; pool pairing; Front Ends to their back end;
mediation to gateways; every host to its logging controller (dotted).
"""

from __future__ import annotations

from collections.abc import Iterable

import graphviz

from .catalogue import host_listeners, logging_controller_for, next_hops_of_edge
from .model import HostRef, Topology

FORMATS = ("svg", "png")

ROLE_COLOURS = {
    "frontend": "#cfe2ff",
    "edge": "#f8d7da",
    "director": "#ffe5d0",
    "mediation": "#e2d9f3",
    "chat": "#d1e7dd",
    "logging-controller": "#fff3cd",
}


class DiagramError(Exception):
    """The drawing could not be rendered (``dot`` missing or failing)."""


def _id(*parts: str) -> str:
    return "_".join(p.replace("-", "_").replace(".", "_") for p in parts)


def _host_label(ref: HostRef, topology: Topology) -> str:
    lines = [ref.name, ref.host.fqdn, ", ".join(ref.host.roles)]
    for listener in host_listeners(ref, topology):
        lines.append(f"{listener.service} {listener.endpoint}")
    return "\\n".join(lines)


def diagram(topology: Topology) -> graphviz.Digraph:
    """The topology as a Graphviz graph (call :func:`render` or read ``.source``)."""
    domains = ", ".join(topology.organisation.sip_domains)
    graph = graphviz.Digraph(
        "topology",
        graph_attr={
            "rankdir": "LR",
            "fontname": "Helvetica",
            "label": f"{topology.organisation.name}: {domains}",
            "labelloc": "t",
            "compound": "true",
        },
        node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica"},
        edge_attr={"fontname": "Helvetica", "fontsize": "10"},
    )
    hosts = topology.hosts()
    policies = topology.policies
    edges = [r for r in hosts if "edge" in r.host.roles]
    external = policies.external_access.remote_users or policies.federation.enabled
    with graph.subgraph(name="cluster_internet") as zone:
        zone.attr(label="Internet", style="dashed")
        if policies.external_access.remote_users:
            zone.node("remote_users", "remote users", shape="ellipse", fillcolor="white")
        if policies.federation.enabled or policies.external_access.public_im:
            allow = policies.federation.allow
            who = "any domain not blocked" if policies.federation.open else ", ".join(allow)
            zone.node("partners", f"federated partners\\n{who}", shape="ellipse", fillcolor="white")
        if not (external and edges):
            zone.node("nothing", "nothing reachable", shape="plaintext", fillcolor="white")
    with graph.subgraph(name="cluster_perimeter") as zone:
        zone.attr(label="Perimeter network", style="dashed")
        for ref in edges:
            zone.node(
                _id("host", ref.name), _host_label(ref, topology), fillcolor=ROLE_COLOURS["edge"]
            )
        if not edges:
            zone.node("no_edge", "no edge", shape="plaintext", fillcolor="white")
    with graph.subgraph(name="cluster_internal") as zone:
        zone.attr(label="Internal network", style="dashed")
        zone.node("clients", "internal clients", shape="ellipse", fillcolor="white")
        for site in topology.sites:
            with zone.subgraph(name=_id("cluster_site", site)) as box:
                box.attr(label=f"site {site}", style="solid")
                _pools(box, topology, site)
    _links(graph, topology, hosts)
    return graph


def _pools(box: graphviz.Digraph, topology: Topology, site: str) -> None:
    for name, pool in topology.pools.items():
        if pool.site != site or any("edge" in h.roles for h in pool.members):
            continue
        with box.subgraph(name=_id("cluster_pool", name)) as cluster:
            fqdn = pool.fqdn or pool.members[0].fqdn
            cluster.attr(label=f"pool {name} ({pool.edition})\\n{fqdn}", style="rounded")
            for ref in topology.hosts():
                if ref.pool_name == name:
                    colour = ROLE_COLOURS.get(ref.host.roles[0], "white")
                    cluster.node(
                        _id("host", ref.name), _host_label(ref, topology), fillcolor=colour
                    )
            if pool.database and any("frontend" in h.roles for h in pool.members):
                cluster.node(
                    _id("db", name), "back end\\nPostgreSQL", shape="cylinder", fillcolor="#e9ecef"
                )
            for index, gateway in enumerate(pool.gateways):
                cluster.node(
                    _id("gw", name, str(index)),
                    f"gateway\\n{gateway.fqdn}:{gateway.port} ({gateway.transport})",
                    shape="component",
                    fillcolor="white",
                )


def _links(graph: graphviz.Digraph, topology: Topology, hosts: Iterable[HostRef]) -> None:
    hosts = list(hosts)
    policies = topology.policies
    for ref in hosts:
        node = _id("host", ref.name)
        roles = set(ref.host.roles)
        ports = ref.host.ports
        if "edge" in roles:
            if policies.external_access.remote_users:
                graph.edge("remote_users", node, label=f"SIP/TLS {ports.edge_access_tls}")
            if policies.federation.enabled or policies.external_access.public_im:
                graph.edge("partners", node, label=f"MTLS {ports.edge_federation_tls}", dir="both")
            for hop in next_hops_of_edge(topology):
                graph.edge(node, _id("host", hop.name), label="MTLS", dir="both")
        if "frontend" in roles:
            graph.edge("clients", node, label=f"SIP/TLS {ports.sip_tls}")
            if ref.pool.database:
                graph.edge(node, _id("db", ref.pool_name), label="SQL")
        if "director" in roles:
            for other in hosts:
                if "frontend" in other.host.roles:
                    graph.edge(node, _id("host", other.name), label="redirect", style="dashed")
        if "mediation" in roles:
            for index, _gateway in enumerate(ref.pool.gateways):
                graph.edge(node, _id("gw", ref.pool_name, str(index)), label="SIP trunk")
        controller = logging_controller_for(ref, topology)
        if controller is not None and controller != ref:
            graph.edge(
                node,
                _id("host", controller.name),
                label=f"syslog/TLS {controller.host.ports.syslog_tls}",
                style="dotted",
            )
    for name, pool in topology.pools.items():
        partner = topology.pools.get(pool.paired_with) if pool.paired_with else None
        if partner is not None:
            graph.edge(
                _id("host", pool.members[0].name),
                _id("host", partner.members[0].name),
                label="pool pairing",
                style="bold",
                dir="both",
                ltail=_id("cluster_pool", name),
                lhead=_id("cluster_pool", pool.paired_with),
            )


def render(topology: Topology, fmt: str) -> bytes:
    """The drawing as ``svg`` or ``png`` bytes; :class:`DiagramError` if ``dot`` fails."""
    if fmt not in FORMATS:
        raise DiagramError(f"unknown format {fmt!r}: use {', '.join(FORMATS)}")
    try:
        data = diagram(topology).pipe(format=fmt)
    except graphviz.ExecutableNotFound:
        raise DiagramError(
            "Graphviz's dot program is not installed: install the Debian package graphviz"
        ) from None
    except graphviz.CalledProcessError as exc:
        raise DiagramError(f"dot failed: {exc}") from None
    return bytes(data)
