"""The meaning of a topology: what a well-formed document can still get wrong.

:func:`check_topology` returns every :class:`Problem`, each naming its path
in the document. Errors make ``conclave topology check`` fail (and
``serve`` and ``provision`` refuse the document); warnings are printed.

Rules, in the order they run:

* sites: every pool names a site that exists;
* hosts: every host belongs to exactly one pool; names and FQDNs are unique;
* pools: a Standard Edition pool is one Front End host on embedded storage;
  an Enterprise Front End pool has a pool FQDN and a PostgreSQL back end;
  the hosts of a pool run the same roles;
* collocation: an edge shares its host with no other role; a Director never
  shares one with a Front End;
* edges: an edge has both an internal and an external interface, on
  different addresses; no other host has edge interfaces;
* ports: no two listeners of a host collide, nor two hosts on one address;
* policies: federation, remote users, public IM and anonymous users need an
  edge; a domain is not both allowed and blocked;
* pairing: the paired pool exists, is compatible (both Front End pools of
  the same edition), sits in another site, and is paired with no other;
* mediation pools have gateways, and only they do;
* certificates in use cover every name their host needs.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .catalogue import NOT_TOGETHER, ROLE_ALONE, Listener, host_listeners, is_loopback
from .certs import certificate_needs, coverage_problems
from .document import Problem
from .model import HostRef, Pool, Topology


def check_topology(topology: Topology, topology_path: Path | None = None) -> list[Problem]:
    """Every problem with ``topology``'s meaning; certificates are read when a path is given."""
    problems: list[Problem] = []
    for rule in (
        _sites,
        _hosts,
        _pools,
        _collocation,
        _edges,
        _ports,
        _policies,
        _pairing,
        _mediation,
        _admin,
        _web,
        _directors,
    ):
        problems += rule(topology)
    if topology_path is not None:
        problems += _certificates(topology, topology_path)
        problems += _partner_files(topology, topology_path)
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


def _sites(topology: Topology) -> list[Problem]:
    known = ", ".join(topology.sites)
    return [
        Problem(f"pools.{name}.site", f'no site "{pool.site}" (sites: {known})')
        for name, pool in topology.pools.items()
        if pool.site not in topology.sites
    ]


def _hosts(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    by_name: dict[str, HostRef] = {}
    by_fqdn: dict[str, HostRef] = {}
    for ref in topology.hosts():
        first = by_name.setdefault(ref.name, ref)
        if first != ref:
            where = "pool" if first.pool_name != ref.pool_name else "the same pool"
            problems.append(
                Problem(
                    f"{ref.path}.name",
                    f'host "{ref.name}" is already a member of {where} '
                    f"{first.pool_name} ({first.path}): a host belongs to exactly one pool",
                )
            )
            continue
        other = by_fqdn.setdefault(ref.host.fqdn, ref)
        if other != ref:
            problems.append(
                Problem(
                    f"{ref.path}.fqdn",
                    f"{ref.host.fqdn} is already the FQDN of host {other.name} ({other.path})",
                )
            )
    pool_fqdns = {p.fqdn: n for n, p in topology.pools.items() if p.fqdn}
    for ref in topology.hosts():
        owner = pool_fqdns.get(ref.host.fqdn)
        if owner is not None and topology.pools[owner].edition == "enterprise":
            problems.append(
                Problem(
                    f"{ref.path}.fqdn",
                    f"{ref.host.fqdn} is the FQDN of pool {owner}; a host needs its own",
                )
            )
    return problems


def _database_problem(url: str) -> str | None:
    if not url:
        return "an Enterprise pool's Front Ends need a PostgreSQL back end (postgresql://...)"
    try:
        parsed = make_url(url)
    except ArgumentError:
        return f"not a database URL: {url!r}"
    if parsed.get_backend_name() != "postgresql":
        return "an Enterprise pool's back end is PostgreSQL (postgresql://host/database)"
    if not parsed.database:
        return "the URL names no database"
    return None


def _back_end_problems(path: str, pool: Pool) -> list[Problem]:
    back_end = pool.back_end
    assert back_end is not None
    found: list[Problem] = []
    if pool.database:
        found.append(
            Problem(f"{path}.database", "give database or back_end, not both (back_end makes it)")
        )
    names = [s.name for s in back_end.servers]
    if len(set(names)) != len(names):
        found.append(Problem(f"{path}.back_end.servers", "each server's name must be unique"))
    if back_end.synchronous and len(back_end.servers) < 2:
        found.append(
            Problem(
                f"{path}.back_end.synchronous",
                "a synchronous back end needs a standby: list at least two servers",
            )
        )
    if back_end.failover == "patroni" and not back_end.etcd:
        found.append(
            Problem(f"{path}.back_end.etcd", "Patroni keeps its leader lock in etcd: list them")
        )
    return found


def _pools(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for name, pool in topology.pools.items():
        path = f"pools.{name}"
        roles = [tuple(sorted(h.roles)) for h in pool.members]
        has_frontend = any("frontend" in h.roles for h in pool.members)
        if pool.edition == "standard":
            if len(pool.members) != 1:
                problems.append(
                    Problem(
                        f"{path}.members",
                        f"a Standard Edition pool has exactly one host (found {len(pool.members)})",
                    )
                )
            if not has_frontend:
                problems.append(
                    Problem(
                        f"{path}.members[0].roles",
                        "a Standard Edition pool's host runs the frontend role",
                    )
                )
            if pool.database:
                problems.append(
                    Problem(
                        f"{path}.database",
                        "a Standard Edition pool uses its embedded SQLite database; "
                        "remove database",
                    )
                )
            if pool.fqdn and pool.fqdn != pool.members[0].fqdn:
                problems.append(
                    Problem(
                        f"{path}.fqdn",
                        f"a Standard Edition pool's FQDN is its host's ({pool.members[0].fqdn})",
                    )
                )
        else:
            if not pool.fqdn and (has_frontend or len(pool.members) > 1):
                problems.append(
                    Problem(
                        f"{path}.fqdn",
                        "an Enterprise pool of Front Ends or of several hosts needs a pool FQDN",
                    )
                )
            if has_frontend:
                if pool.back_end is not None:
                    problems += _back_end_problems(path, pool)
                else:
                    reason = _database_problem(pool.database)
                    if reason:
                        problems.append(Problem(f"{path}.database", reason))
                fes = sum(1 for h in pool.members if "frontend" in h.roles)
                if pool.state and not pool.state.startswith(
                    ("redis://", "rediss://", "sentinel://")
                ):
                    problems.append(
                        Problem(
                            f"{path}.state",
                            "the pool state is Redis: redis://host:port/db, or "
                            "sentinel://host:port,host:port/SERVICE behind Redis Sentinel",
                        )
                    )
                elif fes > 1 and not pool.state:
                    problems.append(
                        Problem(
                            f"{path}.state",
                            f"{fes} Front Ends share the back end but no pool state: each "
                            "serves only the clients connected to it (registrations and "
                            'presence stay apart); set state = "redis://..." (docs/pools.md)',
                            "warning",
                        )
                    )
            elif pool.database or pool.state or pool.back_end:
                problems.append(Problem(f"{path}.database", "only Front End pools have a back end"))
        for index, member in enumerate(pool.members):
            if member.workers == 1:
                continue
            where = f"{path}.members[{index}].workers"
            if "frontend" not in member.roles:
                problems.append(Problem(where, "only a Front End runs several workers"))
            elif not pool.state:
                problems.append(
                    Problem(
                        where,
                        f"{member.workers} workers share registrations and presence through "
                        f'the pool state: set {path}.state = "redis://..." (docs/pools.md)',
                    )
                )
        if pool.transports != ["tls"] and not has_frontend:
            problems.append(
                Problem(f"{path}.transports", "only Front End pools have SIP transports")
            )
        for index, host_roles in enumerate(roles[1:], start=1):
            if host_roles != roles[0]:
                problems.append(
                    Problem(
                        f"{path}.members[{index}].roles",
                        f"every host of a pool runs the same roles "
                        f"(members[0] runs {', '.join(roles[0])})",
                    )
                )
    if len(topology.organisation.sip_domains) > 1:
        problems.append(
            Problem(
                "organisation.sip_domains",
                f"a Front End serves the default domain ({topology.domain}) only for now; "
                "the others are published in DNS and certificates",
                "warning",
            )
        )
    return problems


def _collocation(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for ref in topology.hosts():
        roles = set(ref.host.roles)
        for alone in ROLE_ALONE & roles:
            if len(roles) > 1:
                others = ", ".join(sorted(roles - {alone}))
                problems.append(
                    Problem(
                        f"{ref.path}.roles",
                        f"an {alone} shares its host with no other role (remove {others}): it "
                        "sits in the perimeter network",
                    )
                )
        for pair in NOT_TOGETHER:
            if pair <= roles:
                a, b = sorted(pair)
                problems.append(Problem(f"{ref.path}.roles", f"{a} and {b} may not share a host"))
    return problems


def _directors(topology: Topology) -> list[Problem]:
    """A Director reads its pools' users from their back ends: a Standard Edition pool (its
    users in an embedded file on its own host) is not served, so its users cannot sign in
    through the Edge, whose next hop the Director is."""
    if not any("director" in ref.host.roles for ref in topology.hosts()):
        return []
    return [
        Problem(
            f"pools.{name}.database",
            f"pool {name} has no back end a Director can read (a Standard Edition pool): its "
            "users cannot sign in through the edge while a Director is its next hop",
            "warning",
        )
        for name, pool in topology.pools.items()
        if not pool.database and any("frontend" in m.roles for m in pool.members)
    ]


def _edges(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for ref in topology.hosts():
        edge, path = ref.host.edge, f"{ref.path}.edge"
        if "edge" not in ref.host.roles:
            if edge is not None:
                problems.append(Problem(path, "only an edge has edge interfaces"))
            continue
        if edge is None:
            problems.append(Problem(path, "an edge needs internal and external interfaces"))
            continue
        if edge.internal is None:
            problems.append(Problem(f"{path}.internal", "an edge needs an internal interface"))
        if edge.external is None:
            problems.append(Problem(f"{path}.external", "an edge needs an external interface"))
        if edge.internal and edge.external and edge.internal.address == edge.external.address:
            problems.append(
                Problem(
                    f"{path}.external.address",
                    "the external interface needs its own address, apart from the internal one",
                )
            )
    return problems


def _collision(a: Listener, b: Listener) -> bool:
    if a.protocol != b.protocol or a.port != b.port:
        return False
    wildcard = {"0.0.0.0", "::"}
    return a.address == b.address or a.address in wildcard or b.address in wildcard


def _ports(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    seen: list[tuple[HostRef, Listener]] = []
    for ref in topology.hosts():
        for listener in host_listeners(ref, topology):
            for other_ref, other in seen:
                if not _collision(listener, other):
                    continue
                owner = "this host" if other_ref == ref else f"host {other_ref.name}"
                problems.append(
                    Problem(
                        listener.path,
                        f"{listener.endpoint} is also used by {owner} ({other.path}, {other.role})",
                    )
                )
                break
            seen.append((ref, listener))
    return problems


def _policies(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    policies = topology.policies
    has_edge = any("edge" in ref.host.roles for ref in topology.hosts())
    needs_edge = (
        ("policies.federation.enabled", policies.federation.enabled, "federation"),
        (
            "policies.external_access.remote_users",
            policies.external_access.remote_users,
            "remote access",
        ),
        ("policies.external_access.public_im", policies.external_access.public_im, "public IM"),
        ("policies.anonymous_users", policies.anonymous_users, "anonymous access"),
    )
    for path, on, what in needs_edge:
        if on and not has_edge:
            problems.append(Problem(path, f"{what} needs an edge (no host has the edge role)"))
    federation = policies.federation
    for index, domain in enumerate(federation.allow):
        if domain in federation.block:
            problems.append(
                Problem(f"policies.federation.allow[{index}]", f"{domain} is also blocked")
            )
        if domain in topology.organisation.sip_domains:
            problems.append(
                Problem(
                    f"policies.federation.allow[{index}]",
                    f"{domain} is one of our own SIP domains, not a partner",
                )
            )
    for index, partner in enumerate(federation.partners):
        where = f"policies.federation.partners[{index}]"
        if partner.domain in federation.block:
            problems.append(Problem(f"{where}.domain", f"{partner.domain} is also blocked"))
        if partner.domain in topology.organisation.sip_domains:
            problems.append(
                Problem(f"{where}.domain", f"{partner.domain} is one of our own SIP domains")
            )
    if federation.partner_discovery and not federation.enabled:
        problems.append(
            Problem("policies.federation.partner_discovery", "needs federation enabled")
        )
    if federation.open and not federation.enabled:
        problems.append(Problem("policies.federation.open", "needs federation enabled"))
    if federation.enabled and not (
        federation.allow or federation.open or federation.partner_discovery or federation.partners
    ):
        problems.append(
            Problem(
                "policies.federation.allow",
                "federation is on but the allow-list is empty: no partner can federate",
                "warning",
            )
        )
    if policies.external_access.public_im and not federation.enabled:
        problems.append(
            Problem(
                "policies.external_access.public_im",
                "public IM runs over federation: enable policies.federation too",
            )
        )
    return problems


def _pairing(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    partners: dict[str, list[str]] = defaultdict(list)
    for name, pool in topology.pools.items():
        target_name = pool.paired_with
        if not target_name:
            continue
        path = f"pools.{name}.paired_with"
        target = topology.pools.get(target_name)
        if target_name == name:
            problems.append(Problem(path, "a pool cannot be paired with itself"))
            continue
        if target is None:
            problems.append(
                Problem(path, f'no pool "{target_name}" (pools: {", ".join(topology.pools)})')
            )
            continue
        if target.paired_with and target.paired_with != name:
            problems.append(
                Problem(
                    path,
                    f"pool {target_name} is paired with {target.paired_with}; "
                    "a pool has at most one partner",
                )
            )
            continue
        kinds = [any("frontend" in h.roles for h in p.members) for p in (pool, target)]
        if not all(kinds):
            problems.append(Problem(path, "only Front End pools are paired"))
        elif pool.edition != target.edition:
            problems.append(
                Problem(
                    path,
                    f"pool {target_name} is {target.edition} and this one {pool.edition}: "
                    "paired pools have the same edition",
                )
            )
        if pool.site == target.site:
            problems.append(
                Problem(
                    path,
                    f"pool {target_name} is in the same site ({pool.site}): paired pools sit in "
                    "different sites so one disaster cannot take both",
                )
            )
        for a, b in ((name, target_name), (target_name, name)):
            if b not in partners[a]:
                partners[a].append(b)
    for name, paired in partners.items():
        if len(paired) > 1:
            problems.append(
                Problem(
                    f"pools.{name}.paired_with",
                    f"pool {name} is paired with {' and '.join(paired)}: at most one partner",
                )
            )
    return problems


def _mediation(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for name, pool in topology.pools.items():
        mediation = any("mediation" in h.roles for h in pool.members)
        if mediation and not pool.gateways:
            problems.append(
                Problem(f"pools.{name}.gateways", "a mediation pool needs at least one gateway")
            )
        if pool.gateways and not mediation:
            problems.append(Problem(f"pools.{name}.gateways", "only mediation pools have gateways"))
    return problems


def _admin(topology: Topology) -> list[Problem]:
    problems: list[Problem] = []
    for ref in topology.hosts():
        if not ref.host.admin:
            continue
        address = ref.host.admin.rpartition(":")[0].strip("[]")
        if not is_loopback(address) and address != ref.host.address:
            problems.append(
                Problem(
                    f"{ref.path}.admin",
                    f"{address} is neither loopback nor this host's address ({ref.host.address})",
                )
            )
    return problems


def _web(topology: Topology) -> list[Problem]:
    """The web face runs on Front Ends over TLS; the console needs the admin interface."""
    problems: list[Problem] = []
    for name, pool in topology.pools.items():
        has_frontend = any("frontend" in h.roles for h in pool.members)
        if pool.web and not has_frontend:
            problems.append(Problem(f"pools.{name}.web", "only Front End pools serve the web face"))
        elif pool.web and "tls" not in pool.transports:
            problems.append(
                Problem(
                    f"pools.{name}.web",
                    "the web face serves the Front Ends' TLS certificate: add tls to transports",
                )
            )
    consoles = False
    for ref in topology.hosts():
        if not ref.host.console:
            continue
        consoles = True
        if not ref.host.admin:
            problems.append(
                Problem(f"{ref.path}.console", "the console is on the admin interface: set admin")
            )
        if "frontend" not in ref.host.roles or "tls" not in ref.pool.transports:
            problems.append(
                Problem(f"{ref.path}.console", "only a Front End with tls serves the admin console")
            )
    if consoles and not topology.policies.administrators:
        problems.append(
            Problem(
                "policies.administrators",
                "a host serves the admin console but nobody may sign in to it",
                level="warning",
            )
        )
    return problems


def _partner_files(topology: Topology, topology_path: Path) -> list[Problem]:
    """Each partner's CA bundle must exist (provisioning copies it to the edges)."""
    problems = []
    for index, partner in enumerate(topology.policies.federation.partners):
        if partner.ca and not (Path(topology_path).parent / partner.ca).is_file():
            problems.append(
                Problem(
                    f"policies.federation.partners[{index}].ca",
                    f"{partner.ca}: no such file (the CA bundle of {partner.domain})",
                )
            )
    return problems


def _certificates(topology: Topology, topology_path: Path) -> list[Problem]:
    problems: list[Problem] = []
    for need in certificate_needs(topology, topology_path):
        problems += [Problem(need.path, reason) for reason in coverage_problems(need)]
    return problems
